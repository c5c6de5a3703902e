"""A Triton Python model for `bench.hops` only: tokenise and encode in one step (one hop fewer).

The `local` target runs two Python models behind an ensemble: `<model>_preprocess` (text →
padded ids) and `<model>_encoder` (ONNX Runtime over length-packed rows). This model does
both in one stub, with the same runtime functions, so the benchmark can measure what the
ensemble's second hop costs. It reads TEXT and TRUNCATE only (no templates, no token ids):
enough for the default model's measurement, not a served model.
"""

from __future__ import annotations

import numpy as np
import triton_python_backend_utils as pb_utils

from contract import EncoderHostParams, TextParams, model_config, parameters, version_dir
from runtime.errors import InputError
from runtime.onnx_encoder import Packing, open_session, run_packed
from runtime.preprocess_model import strings
from runtime.text import TextLayout, encode, frame_all, load_tokenizer, pad


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        params = parameters(model_config(args))
        self.text, host = TextParams.from_parameters(params), EncoderHostParams.from_parameters(params)
        self.layout = TextLayout.of(self.text)
        self.tokenizer = load_tokenizer(str(version_dir(args) / self.text.tokenizer))
        self.session = open_session(str(version_dir(args) / host.onnx_file), host.intra_op_threads, spinning=False)
        self.packing = Packing(host.max_rows, host.max_tokens, host.max_padding)

    def execute(self, requests):
        texts = [strings(r, "TEXT") or [] for r in requests]
        modes = [(strings(r, "TRUNCATE") or [self.text.default_truncate])[0] for r in requests]
        contents = encode(self.tokenizer, [t for rows in texts for t in rows])
        feeds, counts, errors = [], [], []
        start = 0
        for rows, mode in zip(texts, modes, strict=True):
            part, start = contents[start : start + len(rows)], start + len(rows)
            try:
                batch = pad(frame_all(part, self.layout, mode), self.layout)
            except InputError as exc:
                errors.append(exc)
                continue
            errors.append(None)
            feeds.append({"input_ids": batch.input_ids, "attention_mask": batch.attention_mask})
            counts.append(batch.token_count.astype(np.int32))
        outputs = iter(run_packed(self.session, feeds, ("EMBEDDING",), self.packing) if feeds else [])
        count = iter(counts)
        responses = []
        for error in errors:
            if error is not None:
                responses.append(
                    pb_utils.InferenceResponse(error=pb_utils.TritonError(str(error), pb_utils.TritonError.INVALID_ARG))
                )
                continue
            vectors = next(outputs)["EMBEDDING"]
            tensors = [pb_utils.Tensor("EMBEDDING", vectors), pb_utils.Tensor("TOKEN_COUNT", next(count))]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
        return responses
