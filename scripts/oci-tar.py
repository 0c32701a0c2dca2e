#!/usr/bin/env python3
"""Write a one-layer image holding one static binary as a `docker save`
archive (the format `ctr images import` and `docker load` both read).

    oci-tar.py --binary pause --entrypoint /pause --user 65535:65535 \
               --name registry.kennel.invalid/pause:3.10 --out pause.tar

Used by scripts/k8s-up.sh for the pod sandbox's pause image, which no
registry can serve on these machines."""

import argparse
import hashlib
import io
import json
import tarfile


def layer_with(binary: str, path: str) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as layer:
        with open(binary, "rb") as source:
            data = source.read()
        info = tarfile.TarInfo(path.lstrip("/"))
        info.size, info.mode, info.mtime = len(data), 0o755, 0
        layer.addfile(info, io.BytesIO(data))
    return out.getvalue()


def add(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o644, 0
    archive.addfile(info, io.BytesIO(data))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--binary", required=True)
    parser.add_argument("--entrypoint", required=True)
    parser.add_argument("--user", default="")
    parser.add_argument("--name", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    layer = layer_with(args.binary, args.entrypoint)
    diff_id = "sha256:" + hashlib.sha256(layer).hexdigest()
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Entrypoint": [args.entrypoint], "User": args.user},
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        },
        separators=(",", ":"),
    ).encode()
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    layer_name = diff_id.split(":")[1] + "/layer.tar"
    manifest = json.dumps(
        [{"Config": config_name, "RepoTags": [args.name], "Layers": [layer_name]}]
    ).encode()
    with tarfile.open(args.out, "w", format=tarfile.PAX_FORMAT) as archive:
        add(archive, layer_name, layer)
        add(archive, config_name, config)
        add(archive, "manifest.json", manifest)


if __name__ == "__main__":
    main()
