"""Small ICC v2 profiles built byte by byte, and the colour maths to check conversions independently.

``PIL.ImageCms.createProfile`` builds only sRGB, Lab and XYZ profiles, so the tests build the
profiles a real file carries (an Adobe-RGB-like matrix/TRC profile, a grey profile, a CMYK
profile with a lookup table) from the ICC specification (ICC.1:2001-04, version 2):
a 128-byte header, a tag table, then the tags.
"""

import struct

import numpy as np

D50 = (0.9642, 1.0, 0.8249)  # the profile connection space's white

#: Linear sRGB -> XYZ (D50, Bradford-adapted): the colorants of the sRGB ICC profile.
SRGB_TO_XYZ_D50 = np.array([
    [0.4360747, 0.3850649, 0.1430804],
    [0.2225045, 0.7168786, 0.0606169],
    [0.0139322, 0.0971045, 0.7141733],
])

#: Adobe RGB (1998) colorants adapted to D50 (columns red, green, blue) and its gamma, 563/256.
ADOBE_RGB_COLORANTS = np.array([(0.6097, 0.3111, 0.0195), (0.2053, 0.6257, 0.0609), (0.1492, 0.0632, 0.7446)]).T
ADOBE_RGB_GAMMA = 563 / 256


def _s15fixed16(value: float) -> bytes:
    return struct.pack(">i", round(value * 65536))


def _xyz_tag(xyz) -> bytes:
    return b"XYZ " + bytes(4) + b"".join(_s15fixed16(v) for v in xyz)


def _text_description_tag(text: str) -> bytes:
    ascii_text = text.encode("ascii") + b"\0"
    # ASCII part, then empty Unicode (language, count) and ScriptCode (code, count, 67 bytes) parts.
    return b"desc" + bytes(4) + struct.pack(">I", len(ascii_text)) + ascii_text + bytes(8) + bytes(3) + bytes(67)


def _gamma_tag(gamma: float) -> bytes:
    return b"curv" + bytes(4) + struct.pack(">IH", 1, round(gamma * 256))  # one entry: a u8Fixed8 gamma


def _profile(device_class: bytes, colour_space: bytes, tags: dict) -> bytes:
    table_size = 4 + 12 * len(tags)
    table, body = b"", b""
    for signature, data in tags.items():
        data += bytes(-len(data) % 4)  # tags start on 4-byte boundaries
        table += signature + struct.pack(">II", 128 + table_size + len(body), len(data))
        body += data
    size = 128 + table_size + len(body)
    header = (
        struct.pack(">I4sI4s4s4s", size, bytes(4), 0x02100000, device_class, colour_space, b"XYZ ")
        + bytes(12)  # creation date
        + b"acsp"
        + bytes(28)  # platform, flags, manufacturer, model, attributes, rendering intent
        + b"".join(_s15fixed16(v) for v in D50)
        + bytes(48)  # creator, reserved
    )
    assert len(header) == 128
    return header + struct.pack(">I", len(tags)) + table + body


def adobe_rgb_like_profile(description: str = "Adobe RGB (1998)-like test profile") -> bytes:
    """A matrix/TRC RGB display profile with Adobe RGB (1998)'s colorants and gamma."""
    red, green, blue = ADOBE_RGB_COLORANTS.T
    gamma = _gamma_tag(ADOBE_RGB_GAMMA)
    return _profile(b"mntr", b"RGB ", {
        b"desc": _text_description_tag(description), b"wtpt": _xyz_tag(D50),
        b"rXYZ": _xyz_tag(red), b"gXYZ": _xyz_tag(green), b"bXYZ": _xyz_tag(blue),
        b"rTRC": gamma, b"gTRC": gamma, b"bTRC": gamma,
    })


def linear_grey_profile(description: str = "Linear grey test profile") -> bytes:
    """A grey profile with gamma 1.0: a stored 128 is half the light, which sRGB encodes as about 188."""
    return _profile(b"mntr", b"GRAY", {
        b"desc": _text_description_tag(description), b"wtpt": _xyz_tag(D50), b"kTRC": _gamma_tag(1.0),
    })


def cmyk_profile(inks, description: str = "Toy CMYK test profile") -> bytes:
    """A CMYK output profile whose A2B0 table (lut16, 2 grid points per ink) prints each ink as ``inks``.

    ``inks`` gives the sRGB colour of 100% C, M, Y and K on white paper; overprints multiply
    (each ink filters the light), and intermediate amounts are interpolated by LittleCMS.
    """
    corners = []
    for cyan in (0, 1):  # the grid's first input varies slowest
        for magenta in (0, 1):
            for yellow in (0, 1):
                for black in (0, 1):
                    reflectance = np.ones(3)
                    for present, ink in zip((cyan, magenta, yellow, black), inks, strict=True):
                        if present:
                            reflectance = reflectance * np.asarray(ink) / 255
                    xyz = SRGB_TO_XYZ_D50 @ srgb_to_linear(reflectance * 255)
                    corners.append(np.clip(np.round(xyz * 32768), 0, 65535).astype(int))  # u1Fixed15 XYZ
    identity = (1, 0, 0, 0, 1, 0, 0, 0, 1)
    lut = (
        b"mft2" + bytes(4) + struct.pack(">BBBB", 4, 3, 2, 0)
        + b"".join(_s15fixed16(v) for v in identity)
        + struct.pack(">HH", 2, 2)  # entries of the input and output curves: both identities
        + struct.pack(">8H", *([0, 65535] * 4))
        + b"".join(struct.pack(">3H", *xyz) for xyz in corners)
        + struct.pack(">6H", *([0, 65535] * 3))
    )
    return _profile(b"prtr", b"CMYK", {
        b"desc": _text_description_tag(description), b"wtpt": _xyz_tag(D50), b"A2B0": lut,
    })


def srgb_to_linear(values) -> np.ndarray:
    values = np.asarray(values, float) / 255
    return np.where(values <= 0.04045, values / 12.92, ((values + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(linear) -> np.ndarray:
    linear = np.clip(linear, 0, 1)
    return 255 * np.where(linear <= 0.0031308, linear * 12.92, 1.055 * linear ** (1 / 2.4) - 0.055)


def adobe_rgb_to_srgb(rgb) -> np.ndarray:
    """Adobe RGB values -> sRGB values (float, clipped to the sRGB gamut), by the matrices above."""
    linear = (np.asarray(rgb, float) / 255) ** ADOBE_RGB_GAMMA
    to_srgb = np.linalg.inv(SRGB_TO_XYZ_D50) @ ADOBE_RGB_COLORANTS
    return linear_to_srgb(linear @ to_srgb.T)
