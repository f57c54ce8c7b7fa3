"""Unit tests for explain_core.keys: input key parsing, the retrigger guard and output layouts."""

import pytest

from explain_core.errors import InvalidKeyError
from explain_core.keys import MAX_KEY_LENGTH, InputRef, KeyLayout, check_name, class_label
from explain_core.settings import Settings

INPUT, RESULTS, MODELS = "explain-input", "explain-results", "explain-models"


@pytest.fixture
def layout() -> KeyLayout:
    return KeyLayout(Settings(input_bucket=INPUT, results_bucket=RESULTS, model_bucket=MODELS))


@pytest.fixture
def ref(layout) -> InputRef:
    return layout.parse_input(INPUT, "incoming/gradient/resnet50/v1/cats/tabby cat.jpg", "gradient")


# --------------------------------------------------------------------------- parse_input


def test_parse_a_good_key(layout):
    key = "incoming/gradient/resnet50/v1/cats/tabby.jpg"
    parsed = layout.parse_input(INPUT, key, "gradient")
    assert parsed == InputRef(INPUT, key, "gradient", "resnet50", "v1", "cats/tabby.jpg")
    assert parsed.relative == "gradient/resnet50/v1/cats/tabby.jpg"


@pytest.mark.parametrize(
    "name",
    [
        "my cat.png",
        "a+b.png",
        "a b+c d.jpeg",
        "chat tigré 🐱.png",
        "日本/猫.webp",
        "deep/er/nested/dir/x.png",
        "..png",
        "%20.png",
        "no-extension",
    ],
)
def test_file_names_are_kept_verbatim(layout, name):
    key = f"incoming/perturbation/m-1_x.y/2024-01-01/{name}"
    parsed = layout.parse_input(INPUT, key, "perturbation")
    assert (parsed.family, parsed.model, parsed.version, parsed.name) == ("perturbation", "m-1_x.y", "2024-01-01", name)
    assert parsed.key == key
    assert parsed.bucket == INPUT


@pytest.mark.parametrize(
    "key",
    [
        "incoming/gradient/",
        "incoming/gradient/resnet50",
        "incoming/gradient/resnet50/",
        "incoming/gradient/resnet50/v1",
        "incoming/gradient/resnet50/v1/",
        "incoming/gradient/resnet50/v1/folder/",
    ],
)
def test_keys_missing_model_version_or_name(layout, key):
    with pytest.raises(InvalidKeyError) as info:
        layout.parse_input(INPUT, key, "gradient")
    assert info.value.message == (
        f"key {key!r} does not name a model: upload to incoming/gradient/<model>/<version>/<file>"
    )
    assert info.value.code == "invalid_key"


@pytest.mark.parametrize(
    ("key", "field", "value"),
    [
        ("incoming/gradient//v1/x.png", "model", ""),
        ("incoming/gradient/m//x.png", "version", ""),
        ("incoming/gradient/../v1/x.png", "model", ".."),
        ("incoming/gradient/m/../x.png", "version", ".."),
        ("incoming/gradient/a..b/v1/x.png", "model", "a..b"),
        ("incoming/gradient/m/v1..2/x.png", "version", "v1..2"),
        ("incoming/gradient/.hidden/v1/x.png", "model", ".hidden"),
        ("incoming/gradient/-m/v1/x.png", "model", "-m"),
        ("incoming/gradient/_m/v1/x.png", "model", "_m"),
        ("incoming/gradient/my model/v1/x.png", "model", "my model"),
        ("incoming/gradient/m+1/v1/x.png", "model", "m+1"),
        ("incoming/gradient/modèle/v1/x.png", "model", "modèle"),
        ("incoming/gradient/m/v 1/x.png", "version", "v 1"),
        ("incoming/gradient/m/v~1/x.png", "version", "v~1"),
        ("incoming/gradient/" + "m" * 129 + "/v1/x.png", "model", "m" * 129),
    ],
)
def test_invalid_model_or_version_names(layout, key, field, value):
    with pytest.raises(InvalidKeyError) as info:
        layout.parse_input(INPUT, key, "gradient")
    assert info.value.message.startswith(f"{field} {value!r} is not valid")
    assert "letters, digits, '.', '_' or '-'" in info.value.message
    assert info.value.details == {"field": field}


def test_the_longest_valid_name_is_128_characters(layout):
    name = "m" * 128
    assert layout.parse_input(INPUT, f"incoming/gradient/{name}/v1/x.png", "gradient").model == name


def test_key_length_is_counted_in_bytes(layout):
    prefix = "incoming/gradient/m/v1/"
    fits = prefix + "a" * (MAX_KEY_LENGTH - len(prefix))
    assert len(fits.encode()) == MAX_KEY_LENGTH
    assert layout.parse_input(INPUT, fits, "gradient").name.startswith("aaa")
    with pytest.raises(InvalidKeyError, match="longer than 1024 bytes"):
        layout.parse_input(INPUT, fits + "a", "gradient")
    # 600 characters but 1200 bytes of UTF-8
    wide = prefix + "é" * 600
    assert len(wide) < MAX_KEY_LENGTH < len(wide.encode())
    with pytest.raises(InvalidKeyError, match="longer than 1024 bytes"):
        layout.parse_input(INPUT, wide, "gradient")


@pytest.mark.parametrize("value", ["resnet50", "v1", "2024.01.01", "a", "A-b_c.d", "0"])
def test_check_name_accepts(value):
    assert check_name(value, "model") == value


@pytest.mark.parametrize("value", ["resnet\n", "v1\n"])
def test_check_name_refuses_a_trailing_newline(value):
    with pytest.raises(InvalidKeyError):
        check_name(value, "model")


@pytest.mark.parametrize("value", ["", " ", "\nresnet", "res\nnet", "a/b", "a\\b", "..", "a..", "x" * 129])
def test_check_name_refuses(value):
    with pytest.raises(InvalidKeyError, match="is not valid"):
        check_name(value, "version")


# --------------------------------------------------------------------------- is_input guard


@pytest.mark.parametrize(
    ("bucket", "key", "family", "expected"),
    [
        (INPUT, "incoming/gradient/m/v1/x.png", "gradient", True),
        (INPUT, "incoming/perturbation/m/v1/x.png", "perturbation", True),
        (RESULTS, "incoming/gradient/m/v1/x.png", "gradient", False),
        (MODELS, "incoming/gradient/m/v1/x.png", "gradient", False),
        (INPUT, "incoming/perturbation/m/v1/x.png", "gradient", False),
        (INPUT, "incoming/gradient/m/v1/x.png", "perturbation", False),
        (INPUT, "incoming/gradients/m/v1/x.png", "gradient", False),
        (INPUT, "incoming/gradient", "gradient", False),
        (INPUT, "results/gradient/m/v1/x.png/manifest.json", "gradient", False),
        (INPUT, "errors/gradient/m/v1/x.png.json", "gradient", False),
        (RESULTS, "results/gradient/m/v1/x.png/Saliency/0-a.png", "gradient", False),
        (INPUT, "Incoming/gradient/m/v1/x.png", "gradient", False),
        (INPUT, "/incoming/gradient/m/v1/x.png", "gradient", False),
    ],
)
def test_is_input(layout, bucket, key, family, expected):
    assert layout.is_input(bucket, key, family) is expected


def test_outputs_never_look_like_inputs_even_in_a_shared_bucket():
    shared = KeyLayout(Settings(input_bucket="shared", results_bucket="shared", model_bucket="shared"))
    ref = shared.parse_input("shared", "incoming/gradient/m/v1/x.png", "gradient")
    for key in (
        shared.manifest_key(ref),
        shared.output_key(ref, "20261201T150000-0a1b2c3d", "Saliency", "0-cat", "png"),
        shared.error_key(ref.key),
        shared.model_key("m", "v1", "model.keras"),
    ):
        for family in ("gradient", "perturbation"):
            assert not shared.is_input("shared", key, family), key


def test_family_prefix(layout):
    assert layout.family_prefix("gradient") == "incoming/gradient/"


# --------------------------------------------------------------------------- output layouts


def test_results_layout(layout, ref):
    assert layout.results_base(ref) == "results/gradient/resnet50/v1/cats/tabby cat.jpg/"
    assert layout.manifest_key(ref) == "results/gradient/resnet50/v1/cats/tabby cat.jpg/manifest.json"
    attempt = "20261201T150000-0a1b2c3d"
    assert layout.output_key(ref, attempt, "GradCAM", "3-tabby_cat", "png") == (
        f"results/gradient/resnet50/v1/cats/tabby cat.jpg/attempts/{attempt}/GradCAM/3-tabby_cat.png"
    )
    assert layout.output_key(ref, attempt, "GradCAM", "3-tabby_cat", "npy") == (
        f"results/gradient/resnet50/v1/cats/tabby cat.jpg/attempts/{attempt}/GradCAM/3-tabby_cat.npy"
    )


def test_attempt_ids_are_unique_and_sort_by_start_time():
    from explain_core.keys import new_attempt_id

    first, second = new_attempt_id(), new_attempt_id()
    assert first != second
    assert first[:15] <= second[:15]  # YYYYMMDDTHHMMSS


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("incoming/gradient/resnet50/v1/cats/tabby cat.jpg", "errors/gradient/resnet50/v1/cats/tabby cat.jpg.json"),
        ("incoming/gradient/bad model/x.png", "errors/gradient/bad model/x.png.json"),
        ("incoming/gradient/", "errors/gradient/.json"),
        ("elsewhere/x.png", "errors/elsewhere/x.png.json"),
    ],
)
def test_error_key(layout, key, expected):
    assert layout.error_key(key) == expected


def test_model_key(layout):
    assert layout.model_key("resnet50", "v1", "model.keras") == "models/resnet50/v1/model.keras"
    assert layout.model_key("resnet50", "v1", "card.json") == "models/resnet50/v1/card.json"
    with pytest.raises(InvalidKeyError, match="model '../x' is not valid"):
        layout.model_key("../x", "v1", "model.keras")
    with pytest.raises(InvalidKeyError, match="version 'v1/..' is not valid"):
        layout.model_key("m", "v1/..", "model.keras")


def test_custom_prefixes():
    custom = KeyLayout(
        Settings(
            input_bucket=INPUT, results_bucket=RESULTS, model_bucket=MODELS,
            input_prefix="in/", results_prefix="out/", errors_prefix="err/", models_prefix="mdl/",
        )
    )
    ref = custom.parse_input(INPUT, "in/perturbation/m/v2/a/b.png", "perturbation")
    assert (ref.model, ref.version, ref.name) == ("m", "v2", "a/b.png")
    assert custom.is_input(INPUT, ref.key, "perturbation")
    assert not custom.is_input(INPUT, "incoming/perturbation/m/v2/a/b.png", "perturbation")
    assert custom.manifest_key(ref) == "out/perturbation/m/v2/a/b.png/manifest.json"
    assert custom.error_key(ref.key) == "err/perturbation/m/v2/a/b.png.json"
    assert custom.model_key("m", "v2", "model.keras") == "mdl/m/v2/model.keras"


# --------------------------------------------------------------------------- class_label


@pytest.mark.parametrize(
    ("index", "names", "expected"),
    [
        (3, ["a", "b", "c", "tabby cat"], "3-tabby_cat"),
        (0, ["German shepherd (dog)"], "0-German_shepherd_dog"),
        (0, ["chat tigré"], "0-chat_tigr"),
        (0, ["a/b\\c:d"], "0-a_b_c_d"),
        (0, ["__x__"], "0-x"),
        (0, ["v1.2-beta_3"], "0-v1.2-beta_3"),
        (0, ["日本"], "0"),
        (0, ["   "], "0"),
        (0, [""], "0"),
        (1, ["circle", "square"], "1-square"),
        (2, ["circle", "square"], "2"),
        (-1, ["circle", "square"], "-1"),
        (5, None, "5"),
        (5, [], "5"),
    ],
)
def test_class_label(index, names, expected):
    assert class_label(index, names) == expected


def test_class_label_is_truncated_to_64_characters():
    assert class_label(0, ["x" * 100]) == "0-" + "x" * 64
    assert class_label(0, ["é" * 10 + "y" * 100]) == "0-" + "y" * 64
