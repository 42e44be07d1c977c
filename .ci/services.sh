# Services the tests use. Sourced by .ci/run; usable by hand: `source .ci/services.sh; start_services`.
# Tests that need a service skip when its variable is unset, so a plain `pytest` works without them.

start_services() {
  :
}

stop_services() {
  :
}
