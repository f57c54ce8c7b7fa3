"""The registry of insight kinds: adding one is one class and one line here (docs tables come from it)."""

from explain_core.insights.base import InsightKind
from explain_core.insights.concepts import Craft, Tcav
from explain_core.insights.examples import Prototypes, SimilarExamples
from explain_core.insights.feature_visualization import FeatureVisualization

#: In the order a job runs and reports them.
KINDS: tuple[InsightKind, ...] = (FeatureVisualization(), Tcav(), Craft(), SimilarExamples(), Prototypes())
BY_NAME: dict[str, InsightKind] = {kind.name: kind for kind in KINDS}
