"""`MultimodalSession`: a multimodal run (engine.multimodal_run) loaded for inference: a volume →
the image model's features → image tokens spliced before an instruction → the decoder's answer,
streamed. `rad3d ask` and `rad3d report` (for these runs) call it. Its decoder is the run's merged one
(stage 2) or the unchanged one (stage 1): peft is not needed.

`check_question` does the checks of a question that need only the run's config and tokenizer, so a
command refuses bad input in one line before any model loads.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from engine.errors import ConfigError
from engine.multimodal_run import MultimodalRun, open_multimodal_run
from engine.prompts import question_prompt, report_instruction


@dataclass
class Answer:
    source: str
    instruction: str
    text: str
    n_tokens: int
    finished: bool
    timings: dict


def load_tokenizer(run: MultimodalRun):
    """The run's tokenizer alone (no model): cheap, for counting a prompt's tokens."""
    from transformers import AutoTokenizer

    path = run.resolve(run.config.decoder.path)
    extra = {"gguf_file": run.config.decoder.gguf_file} if run.config.decoder.gguf_file else {}
    try:
        return AutoTokenizer.from_pretrained(path, local_files_only=True, **extra)
    except Exception as err:  # transformers raises many kinds for a bad folder
        raise ConfigError(f"cannot load the run's tokenizer: {err}", path) from None


def decoder_context(run: MultimodalRun) -> int | None:
    """The decoder's context length (positions), from its config alone."""
    from transformers import AutoConfig

    path = run.resolve(run.config.decoder.path)
    extra = {"gguf_file": run.config.decoder.gguf_file} if run.config.decoder.gguf_file else {}
    config = AutoConfig.from_pretrained(path, local_files_only=True, **extra)
    return getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)


def check_question(run: MultimodalRun, question: str, choices=None, tokenizer=None) -> str:
    """The instruction for `question` on this run, or ConfigError: an empty question, a run not trained
    for VQA, or a prompt (BOS, image tokens, question) that leaves no room in the decoder's context."""
    from engine.multimodal import prompt_length

    if not question or not question.strip():
        raise ConfigError("the question is empty")
    if "vqa" not in run.config.tasks:
        raise ConfigError(f"run {run.root.name} was trained for {', '.join(run.config.tasks)} only, not to answer "
                          "questions (task vqa)", run.root)
    instruction = question_prompt(question, choices)
    tokenizer = tokenizer or load_tokenizer(run)
    context = decoder_context(run)
    used = prompt_length(tokenizer, run.config.model.image_tokens, instruction)
    if context is not None and used >= context:
        raise ConfigError(f"the question is too long: with the {run.config.model.image_tokens} image tokens it takes "
                          f"{used} tokens of the decoder's context of {context}")
    return instruction


class MultimodalSession:
    def __init__(self, run: MultimodalRun, image, model, tokenizer, *, device: torch.device):
        self.run, self.image, self.model, self.tokenizer, self.device = run, image, model, tokenizer, device
        self.settings = run.config.generation

    @classmethod
    def load(cls, run_dir: str | Path, *, device: str | torch.device | None = None) -> MultimodalSession:
        from engine.decoders import load_causal_lm
        from engine.image_model import open_image_model
        from engine.inference import pick_device
        from engine.multimodal import MultimodalModel
        from engine.weights import load_weights_strict

        run = open_multimodal_run(run_dir)
        cfg = run.config
        device, dtype = pick_device(device)
        image = open_image_model(run.root, device=device)
        decoder, tokenizer = load_causal_lm(run.resolve(cfg.decoder.path), gguf_file=cfg.decoder.gguf_file, dtype=dtype)
        # The run's decoder already holds any LoRA adapters (merged): nothing to wrap.
        model = MultimodalModel(dataclasses.replace(cfg.model, decoder_mode="frozen"), decoder)
        load_weights_strict(model.connector, run.resolve(cfg.connector_weights), "connector")
        return cls(run, image, model.eval().to(device), tokenizer, device=device)

    def answer_stream(self, volume, instruction: str, settings=None) -> Iterator[str | Answer]:
        """The answer text so far as greedy decoding writes it, then the finished Answer."""
        from engine.multimodal import encode_prompts

        start = time.perf_counter()
        if not hasattr(volume, "hu"):
            from engine.io import load_volume

            volume = load_volume(volume)
        features = self.image.features(volume)
        timings = {"image_s": time.perf_counter() - start}
        prompts = encode_prompts(self.tokenizer, self.model.n_image, [instruction]).to(self.device)
        latent = features.latent[None].to(self.device)
        text, tick = "", time.perf_counter()
        for piece in self.model.stream(latent, features.logits[None].to(self.device), prompts, self.tokenizer,
                                       settings or self.settings):
            text += piece
            yield text
        n_tokens = len(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        timings.update(generate_s=time.perf_counter() - tick, total_s=time.perf_counter() - start)
        limit = (settings or self.settings).max_new_tokens  # the streamer gives text, not the stop reason:
        yield Answer(volume.source, instruction, text.strip(), n_tokens, n_tokens < limit, timings)

    @torch.no_grad()
    def generate(self, latents, logits, instructions, settings=None):
        """Answers for a batch of cached features (and logits), one instruction each (e.g. evaluation):
        an engine.generation.GenerationResult."""
        from engine.multimodal import encode_prompts

        prompts = encode_prompts(self.tokenizer, self.model.n_image, list(instructions)).to(self.device)
        latents = torch.as_tensor(latents, dtype=torch.float32, device=self.device)
        logits = None if logits is None else torch.as_tensor(logits, dtype=torch.float32, device=self.device)
        return self.model.generate(latents, logits, prompts, self.tokenizer, settings or self.settings)

    def ask(self, volume, question: str, choices=None) -> Answer:
        instruction = check_question(self.run, question, choices, self.tokenizer)
        *_, answer = self.answer_stream(volume, instruction)
        return answer

    def report_instruction(self) -> str:
        if "report" not in self.run.config.tasks:
            raise ConfigError(f"run {self.run.root.name} was trained for {', '.join(self.run.config.tasks)} only, "
                              "not to write reports", self.run.root)
        return report_instruction(self.run.config.report_section)
