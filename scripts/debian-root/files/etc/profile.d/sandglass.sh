# The page's terminal speaks UTF-8.
export LANG=C.UTF-8
