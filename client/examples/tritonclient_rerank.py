"""Call a reranker ensemble directly through Triton's gRPC API (no adapter): each row is a document (TEXT)
beside its query (QUERY); SCORE is the raw logit, whose sigmoid is the relevance the adapter returns.

python client/examples/tritonclient_rerank.py --url localhost:8001 --model ms-marco --query "what is triton" \\
    "Triton serves models." "a cat"
"""

from __future__ import annotations

import argparse

import numpy as np
import tritonclient.grpc as grpcclient


def column(name: str, values: list[str]) -> grpcclient.InferInput:
    data = np.array([[v.encode("utf-8")] for v in values], dtype=np.object_)  # BYTES [batch, 1]
    tensor = grpcclient.InferInput(name, list(data.shape), "BYTES")
    tensor.set_data_from_numpy(data)
    return tensor


def rerank(url: str, model: str, query: str, documents: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Raw scores and token counts of each (query, document) pair, in the documents' order."""
    client = grpcclient.InferenceServerClient(url)
    result = client.infer(
        model,
        [column("TEXT", documents), column("QUERY", [query] * len(documents))],
        outputs=[grpcclient.InferRequestedOutput("SCORE"), grpcclient.InferRequestedOutput("TOKEN_COUNT")],
    )
    return result.as_numpy("SCORE").ravel(), result.as_numpy("TOKEN_COUNT").ravel()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default="localhost:8001", help="Triton gRPC endpoint")
    ap.add_argument("--model", required=True, help="reranker ensemble name")
    ap.add_argument("--query", required=True)
    ap.add_argument("documents", nargs="+")
    args = ap.parse_args()
    scores, tokens = rerank(args.url, args.model, args.query, args.documents)
    for i in np.argsort(-scores, kind="stable"):
        relevance = 1 / (1 + np.exp(-scores[i]))
        print(f"{relevance:.6f}  (logit {scores[i]:+.4f}, {tokens[i]} tokens)  {args.documents[i]!r}")


if __name__ == "__main__":
    main()
