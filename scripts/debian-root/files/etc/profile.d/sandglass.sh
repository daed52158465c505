# The page's terminal: root's shell straight from init (no login), speaking UTF-8 and xterm's escapes.
export LANG=C.UTF-8
if [ "$(tty)" = /dev/ttyS0 ]; then
  # init starts it with HOME=/ : bash reads ~/.profile (and root's prompt) after this file.
  export HOME=/root TERM=xterm-256color
  cd "$HOME"
  cat /etc/motd
fi
