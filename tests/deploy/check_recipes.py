"""Checks the launch recipes under deploy/: each parses (bash -n, YAML), has the shape its
launcher expects, and passes moe-server only flags that moe-server has.

    python3 tests/deploy/check_recipes.py DEPLOY_DIR MOE_SERVER_BINARY
"""
import re
import subprocess
import sys
from pathlib import Path

import yaml

deploy, server = Path(sys.argv[1]), sys.argv[2]
failures = []


def check(ok, what):
    print(("ok   " if ok else "FAIL ") + what)
    if not ok:
        failures.append(what)


helpfull = subprocess.run([server, "--helpfull"], capture_output=True, text=True).stdout
known = set(re.findall(r"-(\w+) \(", helpfull))
check("model" in known and "collective_timeout" in known, "moe-server --helpfull lists its flags")


def server_flags(args):
    """The --flags that follow the moe-server binary in an argument list."""
    try:
        start = next(i for i, a in enumerate(args) if a.strip('"\'').endswith("moe-server"))
    except StopIteration:
        return []
    return [a[2:].split("=")[0] for a in args[start + 1:] if a.startswith("--")]


for script in [deploy / "slurm/moe-server.sbatch", deploy / "nccl/nccl.env"]:
    r = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    check(r.returncode == 0, f"bash -n {script.name} {r.stderr.strip()}")

sbatch = (deploy / "slurm/moe-server.sbatch").read_text()
check(re.search(r"^#SBATCH --ntasks-per-node=\d+", sbatch, re.M) is not None, "sbatch sets tasks per node")
check("srun --mpi=pmix" in sbatch, "sbatch starts the ranks with srun --mpi=pmix")
srun_line = " ".join(l.rstrip("\\") for l in sbatch.splitlines() if not l.startswith("#"))
for flag in server_flags(srun_line.split()):
    check(flag in known, f"sbatch: moe-server has --{flag}")

docs = list(yaml.safe_load_all((deploy / "kubernetes/mpijob.yaml").read_text()))
job = next(d for d in docs if d["kind"] == "MPIJob")
check(job["apiVersion"] == "kubeflow.org/v2beta1", "MPIJob is kubeflow.org/v2beta1")
specs = job["spec"]["mpiReplicaSpecs"]
check(set(specs) == {"Launcher", "Worker"}, "MPIJob has a Launcher and Workers")
command = specs["Launcher"]["template"]["spec"]["containers"][0]["command"]
check(command[0] == "mpirun", "the launcher runs mpirun")
np = int(command[command.index("-np") + 1])
check(np == specs["Worker"]["replicas"] * job["spec"]["slotsPerWorker"], "-np equals workers x slots")
for flag in server_flags(command):
    check(flag in known, f"MPIJob: moe-server has --{flag}")
service = next(d for d in docs if d["kind"] == "Service")
check(service["spec"]["selector"].get("training.kubeflow.org/replica-index") == "0",
      "the Service selects worker 0, where rank 0 runs")

env = (deploy / "nccl/nccl.env").read_text()
for var in ["NCCL_SOCKET_IFNAME", "NCCL_IB_HCA", "NCCL_IB_GID_INDEX", "NCCL_DEBUG"]:
    check(f"export {var}=" in env, f"nccl.env sets {var}")

print(f"{len(failures)} failed")
sys.exit(1 if failures else 0)
