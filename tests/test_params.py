"""`rad3d params`: the paper's parameter counts from architecture configs on the meta device."""

import re

import pytest

import cli


def counts(capsys, monkeypatch, *args):
    # Only this command's module: the test does not depend on other commands being importable.
    monkeypatch.setattr(cli, "COMMAND_MODULES", ["engine.commands.params"])
    assert cli.main(["params", *args]) == 0
    out = capsys.readouterr().out
    total = next(line for line in out.splitlines() if line.startswith("total"))
    trainable, frozen = (int(n.replace(",", "")) for n in total.split()[1:3])
    return trainable, frozen, out


@pytest.mark.parametrize(
    "variant, expected, tolerance",
    [
        ("v3", 279.46e6, 0.1e6),  # Table 4
        ("v2", 279.09e6, 0.1e6),  # Table 4
        ("linear", 1.05e6, 0.01e6),  # supplement: linear connector
        ("v1", 1.51e9, 0.01e9),  # Table 4: connector + decoder fine-tuned
    ],
)
def test_paper_counts_with_llama_3_2_1b(capsys, monkeypatch, variant, expected, tolerance):
    trainable, frozen, out = counts(capsys, monkeypatch, "--variant", variant, "--decoder-config", "llama-3.2-1b")
    assert abs(trainable - expected) < tolerance
    if variant == "v1":
        assert frozen == 0  # V-1 fine-tunes the decoder
    else:
        assert round(frozen / 1e9, 2) == 1.24  # the frozen LLaMA-3.2-1B
    assert "connector" in out and "decoder" in out


def test_v3_minus_v2_is_the_logit_inputs(capsys, monkeypatch):
    v3 = counts(capsys, monkeypatch, "--variant", "v3")[0]
    v2 = counts(capsys, monkeypatch, "--variant", "v2")[0]
    assert v3 - v2 == 18 * 10 * 2048


def test_prefix_settings_and_aliases(capsys, monkeypatch):
    base = counts(capsys, monkeypatch, "--variant", "v2", "--decoder-config", "gpt2")[0]
    deeper = counts(capsys, monkeypatch, "--variant", "v2", "--llm-config", "gpt2", "--layers", "9")[0]  # older name
    d = 768
    assert deeper - base == 8 * d * d + 8 * d  # one more transformer block
    linear = counts(capsys, monkeypatch, "--variant", "linear")[0]
    r2gengpt, _, out = counts(capsys, monkeypatch, "--variant", "r2gengpt")
    assert r2gengpt == linear and "alias r2gengpt" in out
    linear_prefix = counts(capsys, monkeypatch, "--variant", "linear-prefix", "--prefix-len", "10")[0]
    assert linear_prefix == 10 * linear  # the supplement's "1.05M×10"


def test_unknown_variant_or_decoder_is_a_one_line_error(capsys, monkeypatch):
    monkeypatch.setattr(cli, "COMMAND_MODULES", ["engine.commands.params"])
    assert cli.main(["params", "--variant", "v9"]) == 1
    assert "unknown variant 'v9'" in capsys.readouterr().err
    assert cli.main(["params", "--decoder-config", "no-such-decoder"]) == 1
    assert "no decoder config" in capsys.readouterr().err


def test_m3d_image_side_at_full_size(capsys, monkeypatch):
    *_, out = counts(capsys, monkeypatch, "--variant", "linear", "--decoder-config", "gpt2", "--vision", "vit3d")
    cells = [re.split(r"\s{2,}", line) for line in out.splitlines() if line.startswith(("vit3d", "spatial-pooling"))]
    rows = {name: [int(t.replace(",", "")), int(f.replace(",", ""))] for name, t, f, _ in cells}
    d = 768  # GPT-2's width
    # M3D's ViT (87,389,184: shared/m3d) + mm_vision_proj 768·768 + 768, all frozen.
    assert rows["vit3d encoder (M3D, frozen)"] == [0, 87_389_184 + 768 * 768 + 768]
    # Linear(768 → d), GELU, Linear(d → d): LaMed's projector, trained.
    assert rows["spatial-pooling connector (256 tokens)"] == [768 * d + d + d * d + d, 0]


def test_lora_adapters_are_counted_on_their_own_row(capsys, monkeypatch):
    """LLaMA-3.2-1B, LoRA on q_proj (2048 → 2048) and v_proj (2048 → 512, grouped KV) in 16 layers."""
    plain = counts(capsys, monkeypatch, "--variant", "v2")
    trainable, frozen, out = counts(capsys, monkeypatch, "--variant", "v2", "--lora", "--lora-r", "4")
    adapters = 16 * 4 * ((2048 + 2048) + (2048 + 512))
    assert trainable - plain[0] == adapters and frozen == plain[1]
    row = next(line for line in out.splitlines() if line.startswith("LoRA adapters"))
    assert int(row.split()[2].replace(",", "")) == adapters
    assert "LoRA r 4, alpha 16" in out
