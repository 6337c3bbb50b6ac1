// Process-wide malloc settings for the trainer's programs.
#pragma once

namespace din {

// Keeps freed memory in the process instead of returning it to the kernel: one heap
// arena, no mmap for large blocks, no trimming. ZeroMQ allocates a fresh buffer for every
// large message; with glibc's defaults each one is a new mmap whose pages fault in on
// first touch, which on virtual machines costs more than the copy itself (measured here:
// first-touch writes at ~0.25 GB/s against ~10 GB/s for warm memcpy, and a 68 MB loopback
// round trip 15x faster with these settings). The cost: RSS does not shrink after a peak.
// Call first thing in main(), before any thread exists.
void ConfigureAllocator();

}  // namespace din
