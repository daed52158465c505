/*
 * sandglass-clock SERVER: sets the guest's clock from one NTP (SNTP, RFC 4330) answer.
 *
 * After a resume or a rewind the guest's clock reads the time its state was saved; v86's virtual
 * router answers NTP with the host's clock. Debian's busybox has no ntpd applet, and a daemon
 * (chrony, ntpsec) would be a package and a resident process for one question a while:
 * /etc/sandglass/boot runs this every 15 s. It steps the clock only when it is off by more than
 * half a second. Built in the image by scripts/debian-root/customize.sh.
 */
#include <arpa/inet.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#define NTP_TO_UNIX 2208988800u /* seconds from 1900 to 1970 */

static uint32_t be32(const unsigned char *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

int main(int argc, char **argv) {
  struct sockaddr_in server = {.sin_family = AF_INET, .sin_port = htons(123)};
  if (argc != 2 || inet_pton(AF_INET, argv[1], &server.sin_addr) != 1) {
    fprintf(stderr, "usage: sandglass-clock IPV4-ADDRESS\n");
    return 2;
  }
  int s = socket(AF_INET, SOCK_DGRAM, 0);
  struct timeval wait = {2, 0};
  if (s < 0 || setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &wait, sizeof wait) != 0) return 1;
  unsigned char packet[48] = {0x23}; /* no leap warning, version 4, mode 3 (client) */
  if (sendto(s, packet, sizeof packet, 0, (struct sockaddr *)&server, sizeof server) != sizeof packet) return 1;
  ssize_t got = recv(s, packet, sizeof packet, 0);
  /* A server's answer (mode 4) with a transmit time after 1970. */
  if (got < 48 || (packet[0] & 7) != 4 || be32(packet + 40) <= NTP_TO_UNIX) return 1;
  struct timeval host = {
      .tv_sec = (time_t)(be32(packet + 40) - NTP_TO_UNIX),
      .tv_usec = (suseconds_t)(((uint64_t)be32(packet + 44) * 1000000) >> 32),
  };
  struct timeval now;
  gettimeofday(&now, NULL);
  double off = (double)(host.tv_sec - now.tv_sec) + (host.tv_usec - now.tv_usec) / 1e6;
  if (off > -0.5 && off < 0.5) return 0;
  if (settimeofday(&host, NULL) != 0) {
    perror("sandglass-clock: settimeofday");
    return 1;
  }
  return 0;
}
