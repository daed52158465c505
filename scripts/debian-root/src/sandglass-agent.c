/*
 * sandglass-agent PORT: the Sandglass guest agent. It listens on the machine's second serial port
 * (/dev/ttyS1, COM2; the page's end is src/vm/guest-agent.ts) and puts one file back at its path
 * while the guest runs ("restore into the running machine", issue 14).
 *
 * Why a process in the guest: the file system is mounted and in use, so the only safe writer is
 * the guest's own kernel. Writing blocks under it from outside would race its page cache and
 * journal, and typing commands into the person's serial shell would land in whatever they are
 * doing (an editor, a pager). The page puts the file's bytes in the shared folder (/shared, v86's
 * 9p device), then asks here, on a port nobody else uses; this copies it into place the way a
 * careful editor saves a file. Its writes are ordinary guest writes: they reach the write log
 * and the timeline like any other, and the page checkpoints before asking, so a rewind undoes it.
 *
 * Protocol: ASCII lines ending in "\n", one request and one answer each.
 *   page -> agent   SGA1 <n> ping
 *                   SGA1 <n> file <source> <target> <mode> <uid> <gid> <mtime>
 *                   SGA1 <n> symlink <link-target> <target> <uid> <gid> <mtime>
 *   agent -> page   SGA1 <n> ok <sha256 hex> <bytes>      (ping: SGA1 <n> ok agent 1)
 *                   SGA1 <n> error <message, to the end of the line>
 * <n> is the page's request number, echoed. Paths are hex-encoded bytes (a Linux path is any bytes
 * but NUL); <mode> is octal permission bits (07777), <uid> <gid> <mtime> decimal (mtime in seconds
 * since the epoch). The answer's checksum is SHA-256 of the bytes written (of the link target for a
 * symlink), so the page knows the file holds what it sent.
 *
 * "file" copies <source>, a file under /shared, to <target> atomically: into a temporary file in
 * the target's directory, fsync'ed, then owner, mode and times set, renamed over <target>, and the
 * directory fsync'ed; <source> is deleted afterwards (or after a failure). A reader of <target> sees
 * the old file or the new one, never a mix; a crash leaves one of them (and maybe a temporary file
 * named .sandglass-restore-*). Missing directories on the way are created (mode 0755). A <target>
 * that is a directory now is refused. Other hard links to the old file keep the old content (the
 * path gets a new file). "symlink" makes the link under a temporary name and renames it over.
 *
 * Started by /etc/sandglass/boot when the machine has the port; built in the image by
 * scripts/debian-root/customize.sh with the guest's gcc. SHA-256 is FIPS 180-4, written out below
 * (the image has no crypto library headers, and this is the whole of what is needed).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#define MAX_LINE 20000
/* Where the page puts files for the agent (a test build may say elsewhere). */
#ifndef SHARED
#define SHARED "/shared/"
#endif
#define TEMP_BYTES 4400

/* ── SHA-256 ───────────────────────────────────────────────────────────────────────────────── */

typedef struct {
  uint32_t h[8];
  uint64_t bytes;
  unsigned char buf[64];
  size_t used;
} sha256_t;

static const uint32_t K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be,
    0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa,
    0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85,
    0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3,
    0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f,
    0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

#define ROR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static void sha256_block(sha256_t *s, const unsigned char *p) {
  uint32_t w[64];
  for (int i = 0; i < 16; i++) w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
  for (int i = 16; i < 64; i++) {
    uint32_t s0 = ROR(w[i - 15], 7) ^ ROR(w[i - 15], 18) ^ (w[i - 15] >> 3);
    uint32_t s1 = ROR(w[i - 2], 17) ^ ROR(w[i - 2], 19) ^ (w[i - 2] >> 10);
    w[i] = w[i - 16] + s0 + w[i - 7] + s1;
  }
  uint32_t a = s->h[0], b = s->h[1], c = s->h[2], d = s->h[3], e = s->h[4], f = s->h[5], g = s->h[6], h = s->h[7];
  for (int i = 0; i < 64; i++) {
    uint32_t t1 = h + (ROR(e, 6) ^ ROR(e, 11) ^ ROR(e, 25)) + ((e & f) ^ (~e & g)) + K[i] + w[i];
    uint32_t t2 = (ROR(a, 2) ^ ROR(a, 13) ^ ROR(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
    h = g, g = f, f = e, e = d + t1, d = c, c = b, b = a, a = t1 + t2;
  }
  s->h[0] += a, s->h[1] += b, s->h[2] += c, s->h[3] += d, s->h[4] += e, s->h[5] += f, s->h[6] += g, s->h[7] += h;
}

static void sha256_init(sha256_t *s) {
  static const uint32_t h0[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
  memcpy(s->h, h0, sizeof h0);
  s->bytes = 0;
  s->used = 0;
}

static void sha256_update(sha256_t *s, const unsigned char *p, size_t n) {
  s->bytes += n;
  while (n > 0) {
    size_t take = 64 - s->used < n ? 64 - s->used : n;
    memcpy(s->buf + s->used, p, take);
    s->used += take, p += take, n -= take;
    if (s->used == 64) sha256_block(s, s->buf), s->used = 0;
  }
}

static void sha256_hex(sha256_t *s, char out[65]) {
  uint64_t bits = s->bytes * 8;
  s->buf[s->used++] = 0x80;
  if (s->used > 56) {
    memset(s->buf + s->used, 0, 64 - s->used);
    sha256_block(s, s->buf);
    s->used = 0;
  }
  memset(s->buf + s->used, 0, 56 - s->used);
  for (int i = 0; i < 8; i++) s->buf[56 + i] = (unsigned char)(bits >> (56 - 8 * i));
  sha256_block(s, s->buf);
  for (int i = 0; i < 8; i++) sprintf(out + 8 * i, "%08x", s->h[i]);
}

/* ── answers ───────────────────────────────────────────────────────────────────────────────── */

static int port = -1;

static void send_all(const char *text) {
  for (size_t n = strlen(text); n > 0;) {
    ssize_t w = write(port, text, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return;
    text += w, n -= (size_t)w;
  }
}

static void answer(const char *id, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void answer(const char *id, const char *fmt, ...) {
  char body[1024], line[1200];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(body, sizeof body, fmt, ap);
  va_end(ap);
  for (char *c = body; *c; c++)
    if (*c == '\n' || *c == '\r') *c = ' ';
  snprintf(line, sizeof line, "SGA1 %s %s\n", id, body);
  send_all(line);
}

/* A path for a message: control bytes shown as '?', long ones cut. */
static const char *shown(const char *path) {
  static char out[200];
  size_t i = 0;
  for (; path[i] && i < sizeof out - 1; i++) out[i] = (unsigned char)path[i] < 32 ? '?' : path[i];
  out[i] = 0;
  return out;
}

/* ── requests ──────────────────────────────────────────────────────────────────────────────── */

/* Decodes hex in place; 0 when it is not an even run of hex digits or holds a NUL byte. */
static int unhex(char *s) {
  size_t n = strlen(s);
  if (n == 0 || n % 2) return 0;
  for (size_t i = 0; i < n; i += 2) {
    unsigned v;
    if (sscanf(s + i, "%2x", &v) != 1 || v == 0 || !strchr("0123456789abcdefABCDEF", s[i]) || !strchr("0123456789abcdefABCDEF", s[i + 1])) return 0;
    s[i / 2] = (char)v;
  }
  s[n / 2] = 0;
  return 1;
}

/* An absolute path without "." or ".." components. */
static int plain_path(const char *p) {
  if (p[0] != '/' || strlen(p) >= 4096) return 0;
  for (const char *c = p; *c; c++) {
    if (c[0] == '/' && c[1] == '.' && (c[2] == '/' || c[2] == 0 || (c[2] == '.' && (c[3] == '/' || c[3] == 0)))) return 0;
  }
  return 1;
}

/* mkdir -p of the directory part of `path` (mode 0755); 0 with errno set on failure. */
static int make_parents(const char *path) {
  char dir[4096];
  snprintf(dir, sizeof dir, "%s", path);
  char *slash = strrchr(dir, '/');
  if (slash == dir) return 1;
  *slash = 0;
  for (char *c = dir + 1;; c++) {
    if (*c == '/' || *c == 0) {
      char keep = *c;
      *c = 0;
      if (mkdir(dir, 0755) != 0 && errno != EEXIST) return 0;
      *c = keep;
      if (keep == 0) return 1;
    }
  }
}

/* The directory of `path` (a copy) and a temporary name in it. */
static void temp_names(const char *path, char *dir, char *temp) {
  snprintf(dir, 4096, "%s", path);
  char *slash = strrchr(dir, '/');
  if (slash == dir) slash[1] = 0;
  else *slash = 0;
  snprintf(temp, TEMP_BYTES, "%s/.sandglass-restore-XXXXXX", strcmp(dir, "/") == 0 ? "" : dir);
}

static int sync_dir(const char *dir) {
  int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return -1;
  int rc = fsync(fd);
  close(fd);
  return rc;
}

static void restore_file(const char *id, char *source, char *target, unsigned mode, unsigned uid, unsigned gid, long long mtime) {
  char dir[4096], temp[TEMP_BYTES], hex[65];
  struct stat st;
  int in = -1, out = -1;
  if (strncmp(source, SHARED, strlen(SHARED)) != 0 || !plain_path(source)) {
    answer(id, "error the file to restore must be in " SHARED);
    return;
  }
  if (!plain_path(target)) {
    answer(id, "error %s is not an absolute path without . or .. parts", shown(target));
    goto done;
  }
  if (lstat(target, &st) == 0 && S_ISDIR(st.st_mode)) {
    answer(id, "error %s is a directory now: a file cannot replace it", shown(target));
    goto done;
  }
  in = open(source, O_RDONLY | O_CLOEXEC);
  if (in < 0) {
    answer(id, "error cannot open %s: %s (is the shared folder mounted at /shared?)", shown(source), strerror(errno));
    goto done;
  }
  if (!make_parents(target)) {
    answer(id, "error cannot create the folders of %s: %s", shown(target), strerror(errno));
    goto done;
  }
  temp_names(target, dir, temp);
  out = mkostemp(temp, O_CLOEXEC);
  if (out < 0) {
    answer(id, "error cannot create a file in %s: %s", shown(dir), strerror(errno));
    goto done;
  }
  sha256_t sha;
  sha256_init(&sha);
  static unsigned char buf[1 << 16];
  for (;;) {
    ssize_t got = read(in, buf, sizeof buf);
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) {
      answer(id, "error cannot read %s: %s", shown(source), strerror(errno));
      goto failed;
    }
    if (got == 0) break;
    for (ssize_t at = 0; at < got;) {
      ssize_t w = write(out, buf + at, (size_t)(got - at));
      if (w < 0 && errno == EINTR) continue;
      if (w < 0) {
        answer(id, "error cannot write in %s: %s", shown(dir), strerror(errno));
        goto failed;
      }
      at += w;
    }
    sha256_update(&sha, buf, (size_t)got);
  }
  /* Owner before mode: chown clears the set-user-ID and set-group-ID bits. */
  struct timespec times[2] = {{.tv_sec = (time_t)mtime}, {.tv_sec = (time_t)mtime}};
  if (fsync(out) != 0 || fchown(out, uid, gid) != 0 || fchmod(out, mode & 07777) != 0 || futimens(out, times) != 0) {
    answer(id, "error cannot finish the new %s: %s", shown(target), strerror(errno));
    goto failed;
  }
  if (close(out) != 0) {
    out = -1;
    answer(id, "error cannot write the new %s: %s", shown(target), strerror(errno));
    goto failed;
  }
  out = -1;
  if (rename(temp, target) != 0) {
    answer(id, "error cannot put the file at %s: %s", shown(target), strerror(errno));
    goto failed;
  }
  sync_dir(dir);
  sha256_hex(&sha, hex);
  answer(id, "ok %s %llu", hex, (unsigned long long)sha.bytes);
  goto done;
failed:
  if (out >= 0) close(out);
  out = -1;
  unlink(temp);
done:
  if (in >= 0) close(in);
  if (out >= 0) close(out);
  if (strncmp(source, SHARED, strlen(SHARED)) == 0 && plain_path(source)) unlink(source);
}

static void restore_symlink(const char *id, const char *link, const char *target, unsigned uid, unsigned gid, long long mtime) {
  char dir[4096], temp[TEMP_BYTES], hex[65];
  struct stat st;
  if (!plain_path(target)) {
    answer(id, "error %s is not an absolute path without . or .. parts", shown(target));
    return;
  }
  if (lstat(target, &st) == 0 && S_ISDIR(st.st_mode)) {
    answer(id, "error %s is a directory now: a link cannot replace it", shown(target));
    return;
  }
  if (!make_parents(target)) {
    answer(id, "error cannot create the folders of %s: %s", shown(target), strerror(errno));
    return;
  }
  temp_names(target, dir, temp);
  /* A name of this process's own; taken (a left-over of an earlier crash): the next one. */
  static unsigned counter;
  int made = -1;
  char base[TEMP_BYTES];
  snprintf(base, sizeof base, "%s", temp);
  base[strlen(base) - 6] = 0;
  for (int tries = 0; tries < 100 && made != 0; tries++) {
    snprintf(temp, TEMP_BYTES, "%s%ld-%u", base, (long)getpid(), counter++);
    made = symlink(link, temp);
    if (made != 0 && errno != EEXIST) break;
  }
  if (made != 0) {
    answer(id, "error cannot create a link in %s: %s", shown(dir), strerror(errno));
    return;
  }
  struct timespec times[2] = {{.tv_sec = (time_t)mtime}, {.tv_sec = (time_t)mtime}};
  if (lchown(temp, uid, gid) != 0 || utimensat(AT_FDCWD, temp, times, AT_SYMLINK_NOFOLLOW) != 0 || rename(temp, target) != 0) {
    answer(id, "error cannot put the link at %s: %s", shown(target), strerror(errno));
    unlink(temp);
    return;
  }
  sync_dir(dir);
  sha256_t sha;
  sha256_init(&sha);
  sha256_update(&sha, (const unsigned char *)link, strlen(link));
  sha256_hex(&sha, hex);
  answer(id, "ok %s %zu", hex, strlen(link));
}

static void handle(char *line) {
  char *words[10];
  int n = 0;
  for (char *save = NULL, *w = strtok_r(line, " ", &save); w && n < 10; w = strtok_r(NULL, " ", &save)) words[n++] = w;
  if (n < 3 || strcmp(words[0], "SGA1") != 0) return; /* noise on the line: not a request */
  const char *id = words[1];
  for (const char *c = id; *c; c++)
    if (*c < '0' || *c > '9') return;
  const char *verb = words[2];
  unsigned mode, uid, gid;
  long long mtime;
  if (strcmp(verb, "ping") == 0 && n == 3) {
    answer(id, "ok agent 1");
  } else if (strcmp(verb, "file") == 0 && n == 9 && unhex(words[3]) && unhex(words[4]) && sscanf(words[5], "%o", &mode) == 1 &&
             sscanf(words[6], "%u", &uid) == 1 && sscanf(words[7], "%u", &gid) == 1 && sscanf(words[8], "%lld", &mtime) == 1) {
    restore_file(id, words[3], words[4], mode, uid, gid, mtime);
  } else if (strcmp(verb, "symlink") == 0 && n == 8 && unhex(words[3]) && unhex(words[4]) && sscanf(words[5], "%u", &uid) == 1 &&
             sscanf(words[6], "%u", &gid) == 1 && sscanf(words[7], "%lld", &mtime) == 1) {
    restore_symlink(id, words[3], words[4], uid, gid, mtime);
  } else {
    answer(id, "error this agent does not understand the request (version 1)");
  }
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: sandglass-agent SERIAL-PORT\n");
    return 2;
  }
  port = open(argv[1], O_RDWR | O_NOCTTY | O_CLOEXEC);
  struct termios tio;
  if (port < 0 || tcgetattr(port, &tio) != 0) {
    fprintf(stderr, "sandglass-agent: %s: %s\n", argv[1], strerror(errno));
    return 1;
  }
  cfmakeraw(&tio);
  cfsetspeed(&tio, B115200);
  tio.c_cflag |= CLOCAL | CREAD;
  if (tcsetattr(port, TCSANOW, &tio) != 0) {
    fprintf(stderr, "sandglass-agent: %s: %s\n", argv[1], strerror(errno));
    return 1;
  }
  umask(022);
  static char line[MAX_LINE];
  size_t used = 0;
  int overlong = 0;
  for (;;) {
    char c;
    ssize_t got = read(port, &c, 1);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) return 1;
    if (c == '\r') continue;
    if (c != '\n') {
      if (used < sizeof line - 1) line[used++] = c;
      else overlong = 1;
      continue;
    }
    line[used] = 0;
    if (!overlong) handle(line);
    used = 0;
    overlong = 0;
  }
}
