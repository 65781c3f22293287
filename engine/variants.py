"""The report-generator variants studied in the paper, as data.

    v1             image prefix, transformer connector, decoder fine-tuned            (Table 4: 1.51B)
    v2             image prefix, transformer connector, decoder frozen                (279.09M)
    v3             image + 18 logits prefix, transformer connector, decoder frozen    (279.46M; the method)
    linear         one Linear to a 1-token prefix, decoder frozen                     (supplement: 1.05M)
    linear-prefix  one Linear to a prefix_len-token prefix, decoder frozen            (supplement: 1.05M×10)
    r2gengpt       alias of `linear`: the paper calls its linear replacement "similar to R2GenGPT"
                   and R2GenGPT's alignment is one Linear on a frozen decoder (its prompt template and
                   LayerNorm are not part of this connector)
    baseline       conventional projection (one Linear, 1-token prefix) + fine-tuned decoder. The
                   paper's baseline follows clip-text-decoder, which feeds the embedding to GPT-2
                   through cross-attention; a prefix token is used here so it works on any causal LM.

The supplement's linear variants take the latent alone: 512·2048 + 2048 = 1,050,624 is the "1.05M".
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.errors import ConfigError


@dataclass(frozen=True)
class VariantSpec:
    name: str
    connector: str  # a name in engine.connectors.CONNECTORS
    uses_logits: bool  # append the classifier's logits to the latent
    decoder_trainable: bool
    prefix_len: int | None  # fixed prefix length, or None to take it from the settings
    description: str


VARIANTS: dict[str, VariantSpec] = {
    spec.name: spec
    for spec in (
        VariantSpec("v1", "transformer", False, True, None, "image prefix, transformer connector, decoder fine-tuned"),
        VariantSpec("v2", "transformer", False, False, None, "image prefix, transformer connector, decoder frozen"),
        VariantSpec("v3", "transformer", True, False, None, "image + logits prefix, transformer connector, decoder frozen"),
        VariantSpec("linear", "linear", False, False, 1, "linear connector to one prefix token, decoder frozen"),
        VariantSpec(
            "linear-prefix", "linear-prefix", False, False, None, "linear connector to a multi-token prefix, decoder frozen"
        ),
        VariantSpec("baseline", "linear", False, True, 1, "conventional linear projection, decoder fine-tuned"),
    )
}
ALIASES: dict[str, str] = {"r2gengpt": "linear", "rad3d-prefix": "v3"}


def variant_names() -> list[str]:
    return sorted(VARIANTS) + sorted(ALIASES)


def get_variant(name: str) -> VariantSpec:
    key = ALIASES.get(name.lower(), name.lower())
    try:
        return VARIANTS[key]
    except KeyError:
        raise ConfigError(f"unknown variant {name!r} (known: {', '.join(variant_names())})") from None
