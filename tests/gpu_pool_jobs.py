"""A grid job for the GPU-pool tests: records its environment and how long it ran; stdlib only (a worker
process imports this module to unpickle the job, so it stays light)."""
import json
import os
import time
from pathlib import Path


def record_env(job, results):
    """Write this task's CUDA_VISIBLE_DEVICES, rank count and running interval; return the job's key."""
    start = time.time()
    time.sleep(float(os.environ.get("GPU_POOL_JOB_SLEEP", "1.0")))
    rank = os.environ.get("SUBMITIT_LOCAL_LOCALID", "0")
    name = f"{abs(hash(job.key))}-{rank}.json"
    Path(results, "env").mkdir(exist_ok=True)
    Path(results, "env", name).write_text(json.dumps(dict(
        key=job.key, cuda=os.environ.get("CUDA_VISIBLE_DEVICES"), ntasks=os.environ.get("SUBMITIT_LOCAL_NTASKS"),
        rank=rank, start=start, end=time.time())))
    return job.key
