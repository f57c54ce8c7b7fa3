"""Presigned links, and the API's view of a manifest: the same outputs as the S3 path, as links.

Responses never carry arrays or images inline (Lambda's synchronous response limit is 6 MB):
every output is a presigned GET URL valid for ``PRESIGNED_URL_SECONDS``.
"""


from explain_core.api_models import ExplanationResult, MethodOutput, MethodResult
from explain_core.keys import GALLERY_PAGE
from explain_core.manifest import Manifest
from explain_core.settings import Settings


class Links:
    """Presigned URLs, signed for the endpoint clients reach (``PRESIGN_ENDPOINT_URL`` when set)."""

    def __init__(self, settings: Settings, s3_client=None):
        import boto3
        from botocore.config import Config

        self.settings = settings
        self.seconds = settings.presigned_url_seconds
        if s3_client is None:
            # A local emulator is reached by functions on one address and by clients on another.
            endpoint = settings.presign_endpoint_url or None
            s3_client = boto3.client("s3", endpoint_url=endpoint, config=Config(signature_version="s3v4"))
        self.s3 = s3_client

    def get(self, bucket: str, key: str) -> str:
        return self.s3.generate_presigned_url(
            "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=self.seconds
        )

    def upload(self, key: str, max_bytes: int, expires_in: int) -> dict:
        """A presigned POST to the input bucket; S3 itself refuses a file over ``max_bytes``."""
        return self.s3.generate_presigned_post(
            Bucket=self.settings.input_bucket, Key=key,
            Conditions=[["content-length-range", 1, max_bytes]], ExpiresIn=expires_in,
        )

    def result(self, key: str) -> str:
        return self.get(self.settings.results_bucket, key)


def explanation_result(manifest: Manifest, links: Links, manifest_key: str, *,
                       cached: bool = False) -> ExplanationResult:
    """A manifest (explain_core.manifest) with every output key replaced by a presigned URL."""
    methods = [
        MethodResult(
            name=method.name, status=method.status, params=method.params, reference=method.reference,
            seconds=method.seconds, passes_per_image=method.passes_per_image, error=method.error,
            # Each kind of output says which of its fields are keys (with_links).
            outputs=[MethodOutput(**output.with_links(links.result)) for output in method.outputs],
        )
        for method in manifest.methods
    ]
    return ExplanationResult(
        status=manifest.status, family=manifest.family, model=manifest.model, input=manifest.input,
        predictions=manifest.predictions, explained_classes=manifest.explained_classes, methods=methods,
        manifest_url=links.result(manifest_key), results_prefix=manifest.results_prefix,
        rendering=manifest.rendering, condition=manifest.condition,
        # The page sits beside the manifest (explain_core.gallery); it embeds its images, so it works
        # through this one presigned URL.
        gallery_url=links.result(manifest_key.rsplit("/", 1)[0] + "/" + GALLERY_PAGE),
        urls_expire_in=links.seconds, cached=cached, timings=manifest.timings,
    )
