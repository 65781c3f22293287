"""`ConnectorConfig`: the one typed description of a prefix projection network, stored in a run
directory's config.json so the connector can be rebuilt by name."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from engine.errors import ConfigError


@dataclass(frozen=True)
class ConnectorConfig:
    kind: str = "transformer"  # a name in engine.connectors.CONNECTORS
    d_embed: int = 512  # image latent size (CT-CLIP: 512)
    n_labels: int = 0  # classifier logits appended to the latent (V-3: 18; 0 = image only)
    d_llm: int = 2048  # decoder hidden size (LLaMA-3.2-1B: 2048)
    prefix_len: int = 10  # prefix tokens handed to the decoder
    clip_len: int = 10  # tokens the input is first projected to (transformer mapper only)
    n_layers: int = 8  # transformer mapper depth
    n_heads: int = 8
    mlp_ratio: float = 2.0
    act: str = "relu"  # "relu" (ClipCap) or "gelu"
    dropout: float = 0.0

    def __post_init__(self):
        for name in ("d_embed", "d_llm", "prefix_len", "clip_len", "n_layers", "n_heads"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"connector {name} must be at least 1, got {getattr(self, name)}")
        if self.n_labels < 0:
            raise ConfigError(f"connector n_labels must be >= 0, got {self.n_labels}")
        if self.act not in ("relu", "gelu"):
            raise ConfigError(f"connector act must be 'relu' or 'gelu', got {self.act!r}")

    @property
    def d_in(self) -> int:
        """Width of the connector's input vector: latent, plus logits when n_labels > 0."""
        return self.d_embed + self.n_labels

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict, source: str | None = None) -> "ConnectorConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown connector config keys: {', '.join(unknown)}", source)
        return cls(**data)
