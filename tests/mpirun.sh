#!/usr/bin/env bash
# mpirun as the tests and launcher use it on one machine: works as root, allows more
# ranks than cores, and keeps all traffic on loopback.
#
# In sanitizer builds (DIN_SANITIZE) the ranks run with LeakSanitizer off: Open MPI's
# runtime keeps allocations until exit, reported from dlopen'ed components without usable
# stacks. Every other AddressSanitizer check stays on, and the project's own code is
# leak-checked by the in-process tests (servers and clients in one process).
export ASAN_OPTIONS="detect_leaks=0${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
exec mpirun --allow-run-as-root --oversubscribe \
  --mca btl self,vader,tcp --mca btl_tcp_if_include lo --mca oob_tcp_if_include lo \
  --mca rmaps_base_oversubscribe 1 -x ASAN_OPTIONS "$@"
