// Emulation build only (DIN_CUDA_EMULATION): stands in for the CUDA runtime's header.
#pragma once

#include "worker/model/cuda_emu/cuda_emu.h"
