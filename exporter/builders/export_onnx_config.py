"""The ONNX export config of the base graph: optimum's sentence-transformers config, adjusted.

The graph's contract (``exporter.builders.export_onnx``): inputs ``input_ids``, ``attention_mask`` and,
when the tokenizer emits them and the transformer takes them, ``token_type_ids``; outputs
``last_hidden_state`` first (renamed from optimum's ``token_embeddings``: ORTModel reads that name) and
``sentence_embedding``; optionally a ``prompt_length`` input (``exporter.builders.prompt_graph``).
"""

from __future__ import annotations

INPUT_NAMES = ("input_ids", "attention_mask")
TOKEN_TYPE_INPUT = "token_type_ids"
TOKEN_OUTPUT = "last_hidden_state"
SENTENCE_OUTPUT = "sentence_embedding"


def input_names_for(model) -> tuple[str, ...]:
    """The graph inputs for a loaded SentenceTransformer: ``token_type_ids`` too when its tokenizer emits
    them and its transformer takes them (consumers feed what the tokenizer produces)."""
    import inspect

    module = model[0]
    emitted = getattr(getattr(module, "tokenizer", None), "model_input_names", None) or ()
    auto_model = getattr(module, "auto_model", None)
    takes = auto_model is not None and TOKEN_TYPE_INPUT in inspect.signature(auto_model.forward).parameters
    return INPUT_NAMES + ((TOKEN_TYPE_INPUT,) if TOKEN_TYPE_INPUT in emitted and takes else ())


def export_config_class(
    token_only: bool = False,
    prompt_input: bool = False,
    truncate_dim: int | None = None,
    input_names: tuple[str, ...] = INPUT_NAMES,
):
    """optimum's sentence-transformers ONNX config, with the token output renamed for ORTModel and put first
    (``token_only``: the transformer's token embeddings alone, for backends that pool outside the graph;
    ``prompt_input``: an optional ``prompt_length`` input that pooling honours, ``exporter.builders.prompt_graph``;
    ``truncate_dim``: ``sentence_embedding`` keeps its first N dimensions, after Normalize, as ST's encode;
    ``input_names``: ``token_type_ids`` too when the tokenizer emits them, see ``input_names_for``)."""
    import torch
    from optimum.exporters.onnx.model_configs import SentenceTransformersTransformerOnnxConfig
    from optimum.exporters.onnx.model_patcher import SentenceTransformersTransformerPatcher

    from exporter.builders import prompt_graph

    def outputs(result):
        if token_only:
            return {TOKEN_OUTPUT: result["token_embeddings"]}
        sentence = result[SENTENCE_OUTPUT]
        sentence = sentence[:, :truncate_dim] if truncate_dim else sentence
        return {TOKEN_OUTPUT: result["token_embeddings"], SENTENCE_OUTPUT: sentence}

    class _Patcher(SentenceTransformersTransformerPatcher):
        def __init__(self, config, model, model_kwargs):
            super().__init__(config, model, model_kwargs)

            def patched_forward(input_ids, attention_mask, token_type_ids=None):
                features = {"input_ids": input_ids, "attention_mask": attention_mask}
                if token_type_ids is not None:
                    features[TOKEN_TYPE_INPUT] = token_type_ids
                return outputs(self.orig_forward(features))

            def patched_forward_with_prompt(input_ids, attention_mask, prompt_length, token_type_ids=None):
                return outputs(
                    prompt_graph.forward_excluding_prompt(
                        model, input_ids, attention_mask, prompt_length, token_type_ids=token_type_ids
                    )
                )

            self.patched_forward = patched_forward_with_prompt if prompt_input else patched_forward

    class _Config(SentenceTransformersTransformerOnnxConfig):
        _MODEL_PATCHER = _Patcher
        _dummy_only_text = False

        @property
        def inputs(self) -> dict[str, dict[int, str]]:
            base = {name: {0: "batch_size", 1: "sequence_length"} for name in input_names}
            return {**base, prompt_graph.PROMPT_LENGTH: {}} if prompt_input and not self._dummy_only_text else base

        def generate_dummy_inputs(self, framework: str = "pt", **kwargs):
            self._dummy_only_text = True  # optimum has no generator for prompt_length: add it here
            try:
                dummy = super().generate_dummy_inputs(framework, **kwargs)
            finally:
                self._dummy_only_text = False
            if prompt_input:
                one = torch.tensor(1, dtype=torch.int64)
                dummy[prompt_graph.PROMPT_LENGTH] = one if framework == "pt" else one.numpy()
            return dummy

        @property
        def outputs(self) -> dict[str, dict[int, str]]:
            token = {TOKEN_OUTPUT: {0: "batch_size", 1: "sequence_length"}}
            return token if token_only else {**token, SENTENCE_OUTPUT: {0: "batch_size"}}

    return _Config
