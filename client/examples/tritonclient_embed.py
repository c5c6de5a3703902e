"""Call an embedding ensemble directly through Triton's gRPC API (no adapter).

python client/examples/tritonclient_embed.py --url localhost:8001 --model all-MiniLM-L6-v2 "a cat" "a kitten"
"""

from __future__ import annotations

import argparse

import numpy as np
import tritonclient.grpc as grpcclient


def embed(url: str, model: str, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    client = grpcclient.InferenceServerClient(url)
    data = np.array([[t.encode("utf-8")] for t in texts], dtype=np.object_)  # TEXT: BYTES [batch, 1]
    text = grpcclient.InferInput("TEXT", list(data.shape), "BYTES")
    text.set_data_from_numpy(data)
    result = client.infer(
        model,
        [text],
        outputs=[grpcclient.InferRequestedOutput("EMBEDDING"), grpcclient.InferRequestedOutput("TOKEN_COUNT")],
    )
    return result.as_numpy("EMBEDDING"), result.as_numpy("TOKEN_COUNT").ravel()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default="localhost:8001", help="Triton gRPC endpoint")
    ap.add_argument("--model", default="all-MiniLM-L6-v2", help="ensemble name")
    ap.add_argument("texts", nargs="+")
    args = ap.parse_args()
    vectors, tokens = embed(args.url, args.model, args.texts)
    for text, vector, n in zip(args.texts, vectors, tokens, strict=True):
        head = [round(float(x), 4) for x in vector[:3]]
        print(f"{text!r}: {vector.shape[0]} dims, norm {np.linalg.norm(vector):.6f}, {n} tokens, head {head}")


if __name__ == "__main__":
    main()
