"""The alternatives to coalescing that the performance issue asks to measure beside it.

- `encoder_direct`: tokenise in the front process (as TEI and vLLM do) and send token ids
  straight to `<model>_encoder`, skipping the ensemble and the preprocess stub.
- `add_fused_model`: the `local` target with one hop fewer: `<model>_fused`, one Python
  model that tokenises and encodes (bench/fused_model.py), called like the ensemble.

Both are measured over Triton's gRPC API, next to the ensemble over the same API, so the
difference is the hop and nothing else.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import numpy as np

from bench.runners import Result, chunks, drive, preprocessor
from export.repository import install_python_model, parse_config, write_config

HERE = Path(__file__).resolve().parent


def add_fused_model(repository: Path, name: str) -> str:
    """Write `<name>_fused` beside an exported `local` model: the preprocessor's text settings, the
    encoder host's packing and batching, TEXT and TRUNCATE in, EMBEDDING and TOKEN_COUNT out."""
    pre = parse_config(repository / f"{name}_preprocess" / "config.pbtxt")
    enc = parse_config(repository / f"{name}_encoder" / "config.pbtxt")
    ensemble = parse_config(repository / name / "config.pbtxt")
    fused = type(pre)()
    fused.CopyFrom(pre)
    fused.name = f"{name}_fused"
    del fused.input[:]
    fused.input.extend(i for i in pre.input if i.name in ("TEXT", "TRUNCATE"))
    del fused.output[:]
    fused.output.extend(ensemble.output)
    fused.dynamic_batching.CopyFrom(enc.dynamic_batching)
    for key, value in enc.parameters.items():
        fused.parameters[key].CopyFrom(value)
    target = repository / fused.name
    if target.exists():
        shutil.rmtree(target)
    write_config(target, fused)
    version = target / "1"
    tokenizer = pre.parameters["tokenizer"].string_value
    shutil.copy(repository / f"{name}_preprocess" / "1" / tokenizer, version / tokenizer)
    for graph in (repository / f"{name}_encoder" / "1").glob("model.onnx*"):
        (version / graph.name).symlink_to(graph.resolve())
    install_python_model(version, "preprocess_model")
    shutil.copy(HERE / "fused_model.py", version / "model.py")
    return fused.name


def encoder_direct(
    grpc_url: str, repository: Path, name: str, texts: list[str], per_request: int, concurrency: int, label: str
) -> Result:
    """Tokenise in this process (the preprocessor's tokenizer and framing) and call `<name>_encoder` over gRPC."""
    import tritonclient.grpc.aio as grpcclient

    from runtime.text import encode, frame_all, pad

    tok, layout = preprocessor(repository / f"{name}_preprocess")

    async def run() -> Result:
        client = grpcclient.InferenceServerClient(grpc_url)

        async def send(batch: list[str]) -> int:
            padded = pad(frame_all(encode(tok, batch), layout, "END"), layout)
            inputs = []
            for tensor, array in (("input_ids", padded.input_ids), ("attention_mask", padded.attention_mask)):
                inputs.append(grpcclient.InferInput(tensor, list(array.shape), "INT64"))
                inputs[-1].set_data_from_numpy(np.ascontiguousarray(array, dtype=np.int64))
            await client.infer(f"{name}_encoder", inputs)
            return int(padded.token_count.sum())

        await send(texts[:per_request])
        seconds, latencies, tokens = await drive(chunks(texts, per_request), concurrency, send)
        await client.close()
        return Result(label, len(texts), seconds, latencies, tokens)

    return asyncio.run(run())
