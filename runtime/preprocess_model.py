"""Triton Python model: text → padded token ids (the `<model>_preprocess` step)."""

from __future__ import annotations

import numpy as np
import triton_python_backend_utils as pb_utils

from contract import (
    INPUT_TYPE,
    INSTRUCTION,
    TEXT,
    TOKEN_COUNT,
    TOKEN_IDS,
    TRUNCATE,
    TextParams,
    model_config,
    parameters,
    version_dir,
)
from runtime.errors import InputError
from runtime.text import (
    Prompt,
    TextLayout,
    apply_prompt,
    encode_bounded,
    fit_given,
    frame_all,
    load_tokenizer,
    pad,
    room_of,
    token_content,
    truncate_mode,
)


def strings(request, name: str) -> list[str] | None:
    """A string input of a request as Python strings, or None when the request omits it."""
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    if tensor is None:
        return None
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in tensor.as_numpy().reshape(-1)]


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        self.params = TextParams.from_parameters(parameters(model_config(args)))
        self.layout, self.prompt = TextLayout.of(self.params), Prompt.of(self.params)
        self.room = room_of(self.layout)
        self.tokenizer = load_tokenizer(str(version_dir(args) / self.params.tokenizer))
        self.vocab_size = self.tokenizer.get_vocab_size(with_added_tokens=True)

    def _token_ids(self, request) -> list[list[int]] | None:
        """Pre-tokenised rows (TOKEN_IDS): the exact sequences the encoder sees (no template, no framing)."""
        tensor = pb_utils.get_input_tensor_by_name(request, TOKEN_IDS)
        if tensor is None:
            return None
        return [token_content(bytes(b), self.vocab_size, i) for i, b in enumerate(tensor.as_numpy().reshape(-1))]

    def _texts(self, request) -> list[str]:
        """The request's texts with the query template applied (per request: INPUT_TYPE, INSTRUCTION)."""
        input_type = strings(request, INPUT_TYPE)
        instruction = strings(request, INSTRUCTION)
        return apply_prompt(
            strings(request, TEXT) or [],
            input_type[0] if input_type else None,
            instruction[0] or None if instruction else None,
            self.prompt,
        )

    def execute(self, requests):
        texts: list[list[str] | InputError] = []
        tokens: list[list[list[int]] | None] = []
        modes: list[str] = []
        for request in requests:
            mode = self.params.default_truncate
            try:
                mode = truncate_mode(strings(request, TRUNCATE), mode)
                tokens.append(self._token_ids(request))
                texts.append([] if tokens[-1] is not None else self._texts(request))
            except InputError as exc:
                tokens.append(None)
                texts.append(exc)
            modes.append(mode)
        rows_of = [rows if isinstance(rows, list) else [] for rows in texts]
        row_modes = [mode for rows, mode in zip(rows_of, modes, strict=True) for _ in rows]
        # one call for the whole batch; a long text costs what truncation keeps of it
        contents = encode_bounded(self.tokenizer, [t for rows in rows_of for t in rows], row_modes, self.room)
        responses = []
        start = 0
        for rows, ids, mode in zip(texts, tokens, modes, strict=True):
            try:
                if isinstance(rows, InputError):
                    raise rows
                part, start = contents[start : start + len(rows)], start + len(rows)
                if ids is not None:
                    framed = [fit_given(row, self.layout, mode, i) for i, row in enumerate(ids)]
                else:
                    framed = frame_all(part, self.layout, mode)
                batch = pad(framed, self.layout)
            except InputError as exc:
                responses.append(
                    pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc), pb_utils.TritonError.INVALID_ARG))
                )
                continue
            responses.append(
                pb_utils.InferenceResponse(
                    output_tensors=[
                        pb_utils.Tensor("input_ids", batch.input_ids),
                        pb_utils.Tensor("attention_mask", batch.attention_mask),
                        pb_utils.Tensor(TOKEN_COUNT, batch.token_count.astype(np.int32)),
                    ]
                )
            )
        return responses
