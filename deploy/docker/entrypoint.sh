#!/bin/sh
# Container entrypoint for the dask-pipeline images.
#
#   scheduler [ARGS]  ->  dask scheduler --preload analytics.dashboard [ARGS]
#   worker [ARGS]     ->  dask worker [ARGS]
#   job [CONFIG]      ->  pipeline run CONFIG   (default /config/job.yaml)
#   anything else     ->  run as given (compose.yaml and the Kubernetes manifests spell out
#                         the full `dask ...` / `pipeline ...` command lines)
#
# `exec` makes the Dask process PID 1, so `docker stop` and Kubernetes' SIGTERM reach it and it
# shuts down cleanly (a worker hands its data back before exiting).
set -e

case "${1:-}" in
  scheduler)
    shift
    exec dask scheduler --preload analytics.dashboard "$@"
    ;;
  worker)
    shift
    exec dask worker "$@"
    ;;
  job)
    shift
    if [ "$#" -eq 0 ]; then
      set -- /config/job.yaml
    fi
    exec pipeline run "$@"
    ;;
  "")
    exec pipeline --help
    ;;
  *)
    exec "$@"
    ;;
esac
