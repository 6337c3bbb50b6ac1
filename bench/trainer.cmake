# e2e: end-to-end training throughput (bench/e2e.sh), reachable as build/bench/e2e so that
# `bench/run.sh e2e` builds what it needs (target e2e) and runs it.
set(din_e2e ${CMAKE_CURRENT_BINARY_DIR}/e2e)
file(WRITE ${din_e2e} "#!/usr/bin/env bash\nDIN_SOURCE_DIR=${PROJECT_SOURCE_DIR} BUILD_DIR=${PROJECT_BINARY_DIR} exec ${CMAKE_CURRENT_SOURCE_DIR}/e2e.sh \"$@\"\n")
file(CHMOD ${din_e2e} PERMISSIONS OWNER_READ OWNER_WRITE OWNER_EXECUTE GROUP_READ
     GROUP_EXECUTE WORLD_READ WORLD_EXECUTE)
add_custom_target(e2e DEPENDS din_ps din_worker din_gen reader_bench)

# scaleout: GAUC of 1 worker against W with the synchronous step, staleness 1 and the
# asynchronous step (bench/scaleout.py); sweep: embedding optimizers, learning rates and
# MBA lambda over several data sets (bench/sweep.py); compact_rows: GAUC of each row format
# (row-wise Adagrad, fp16 and bf16 storage) against float32 Adagrad (bench/compact_rows.py);
# admission: rows against GAUC per min_count and under a half-size cap (SKIP_NEW,
# EVICT_LFU) (bench/admission.py); scale: a large-ID job phase by phase (bench/scale.py);
# stream: daily jobs on drifting din_gen data with ttl_steps against unbounded rows
# (bench/stream.py).
foreach(script scaleout sweep compact_rows admission scale stream)
  set(din_script ${CMAKE_CURRENT_BINARY_DIR}/${script})
  file(WRITE ${din_script} "#!/usr/bin/env bash\nBUILD_DIR=${PROJECT_BINARY_DIR} exec python3 ${CMAKE_CURRENT_SOURCE_DIR}/${script}.py \"$@\"\n")
  file(CHMOD ${din_script} PERMISSIONS OWNER_READ OWNER_WRITE OWNER_EXECUTE GROUP_READ
       GROUP_EXECUTE WORLD_READ WORLD_EXECUTE)
  add_custom_target(${script} DEPENDS din_ps din_worker din_gen din_convert)
endforeach()
