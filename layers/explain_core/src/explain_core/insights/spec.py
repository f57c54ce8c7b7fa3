"""A job specification: which insights of one model, each kind's options under its own key.

    {"feature_visualization": {...}, "tcav": {...}, "seed": 7}

Each kind's options are its :attr:`InsightKind.Spec` (bounds on every size and step count); the job
model is built from the registry (:mod:`explain_core.insights.kinds`), so a new kind needs no change
here. Imports no ML library: the light API image validates specifications with it.
"""

from pydantic import Field, ValidationError, create_model, model_validator

from explain_core.errors import InvalidInsightsSpecError
from explain_core.insights.base import SpecModel
from explain_core.insights.kinds import KINDS

#: Largest specification file read (bytes).
MAX_SPEC_BYTES = 64 * 1024


class _JobSpec(SpecModel):
    title: str | None = Field(default=None, max_length=200, description="Shown on the report")
    seed: int = Field(default=0, ge=0, le=2**31 - 1, description="Seeds every random draw: a job run twice "
                                                                   "gives the same numbers")

    @model_validator(mode="after")
    def _at_least_one_kind(self):
        if not any(getattr(self, kind.name) is not None for kind in KINDS):
            raise ValueError("ask for at least one insight: " + ", ".join(kind.name for kind in KINDS))
        return self

    def requested(self) -> list[tuple[object, SpecModel]]:
        """(kind, its spec) for each kind the job asks for, in the registry's order."""
        return [(kind, getattr(self, kind.name)) for kind in KINDS if getattr(self, kind.name) is not None]


InsightsSpec = create_model(
    "InsightsSpec",
    __base__=_JobSpec,
    __doc__="A job specification: one optional field per insight kind (explain_core.insights.kinds).",
    **{kind.name: (kind.Spec | None, Field(default=None, description=f"{kind.title} ({kind.reference})"))
       for kind in KINDS},
)


def parse_spec(data: bytes) -> "InsightsSpec":
    """A specification file's bytes as an :data:`InsightsSpec`; InvalidInsightsSpecError names every problem."""
    if len(data) > MAX_SPEC_BYTES:
        raise InvalidInsightsSpecError(
            f"the specification is {len(data)} bytes; the limit is {MAX_SPEC_BYTES}", size=len(data),
            limit=MAX_SPEC_BYTES)
    try:
        return InsightsSpec.model_validate_json(data)
    except ValidationError as exc:
        problems = [f"{'.'.join(str(p) for p in e['loc']) or '<file>'}: {e['msg']}" for e in exc.errors()]
        raise InvalidInsightsSpecError(
            "the insights specification is not valid: " + "; ".join(problems[:10]), problems=problems[:20],
        ) from exc
