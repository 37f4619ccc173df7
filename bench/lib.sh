# Shared by the bench scripts (sourced).

wait_ready() { # PORT: until GET /stats answers
  for _ in $(seq 1 200); do
    curl -sf "http://127.0.0.1:$1/stats" >/dev/null 2>&1 && return 0
    sleep 0.05
  done
  echo "the server on port $1 never answered" >&2
  return 1
}
