"""Every bundled model passes the safety checks on the project's task phantoms (issue 12).

The checks a reviewer of a learned denoiser runs first, on phantoms the code makes (no real
data needed, so they run in CI), through the shipped inference path (engine.denoise_volume):

* bias: the flat cylinder's mean HU moves by at most 2 HU;
* noise: at most half the input's at 10% dose;
* low-contrast detectability: the NPW matched-filter d′ of every LCD insert is not below the
  input's (a method that erases the lesion with the noise lowers it);
* fine detail: at least 85% of the in-band energy of every resolution pattern is kept at 25%
  and at 10% dose;
* low-contrast contrast: every ≥ 5 mm insert keeps at least LCD_CONTRAST_FLOOR of its contrast
  at 10% dose (the issue's bar for shipping a model).

The project's target for the contrast is 0.9 on the card's phantom (12 realisations, a larger image); the
floor here is 0.85 because this smaller, faster phantom (8 realisations, 256²) scatters by a few
hundredths. The bundled 4.1 model measures 0.89–0.93 here (4.0: 0.90–0.91); 3.1 (a fixed low-frequency pass-through)
measured 0.60–0.81 and 3.0 0.29–0.46, both below this floor.
"""

import numpy as np
import pytest

from LowDoseDenoiseLib.quality import taskphantoms as tp

#: the bundled 4.1 model measures 0.89–0.93 here (8 realisations, 256² phantom), 3.1 measured 0.60–0.81
LCD_CONTRAST_FLOOR = 0.85


def _bundled():
    from LowDoseDenoiseLib.modelfile import MODELS_DIR, list_models

    entries = [e for e in list_models(MODELS_DIR) if not e.problem]
    if not entries:
        pytest.skip("no bundled model")
    return entries


def _method(model):
    from LowDoseDenoiseLib.engine import denoise_volume

    def run(stack: np.ndarray) -> np.ndarray:
        # the realisations are slices of a z-uniform phantom: each slice's neighbours hold the
        # same objects with independent noise, as a real phantom scan has
        return denoise_volume(stack, model=model, device="cpu", spacing=(0.8, 0.8, 1.0))

    return run


@pytest.fixture(scope="module")
def results():
    from LowDoseDenoiseLib.modelfile import load_model

    out = {}
    lcd = tp.lcd_phantom(size=256, pixel_mm=0.8)
    lcd_pairs = tp.noisy_pairs(lcd, 0.10, realisations=8, seed=11)
    res = tp.resolution_phantom(size=256, pixel_mm=0.68)
    res_pairs = tp.noisy_pairs(res, 0.25, realisations=3, seed=12)
    res_pairs_10 = tp.noisy_pairs(res, 0.10, realisations=3, seed=13)
    for entry in _bundled():
        model = load_model(entry.path)
        method = _method(model)
        absent_out = method(lcd_pairs[0])
        out[entry.name] = {
            "lcd": tp.evaluate_method(lcd, method, *lcd_pairs),
            "lcd_identity": tp.evaluate_method(lcd, lambda x: x, *lcd_pairs),
            "res": tp.evaluate_method(res, method, *res_pairs),
            "res_10": tp.evaluate_method(res, method, *res_pairs_10),
            "bias": float((absent_out.mean(axis=0) - lcd.background)[lcd.background > 30].mean()),
        }
    return out


def test_bias_and_noise(results):
    for name, r in results.items():
        assert abs(r["bias"]) <= 2.0, (name, r["bias"])
        first = next(iter(r["lcd"]))
        assert r["lcd"][first]["noise_sd"] <= 0.5 * r["lcd_identity"][first]["noise_sd"], name


def test_low_contrast_detectability_not_below_the_input(results):
    for name, r in results.items():
        for insert, row in r["lcd"].items():
            assert row["d_prime"] >= r["lcd_identity"][insert]["d_prime"], (name, insert, row)


def test_low_contrast_inserts_keep_their_contrast(results):
    for name, r in results.items():
        for insert, row in r["lcd"].items():
            if float(insert.split(" mm")[0]) >= 5:
                assert row["contrast_ratio"] >= LCD_CONTRAST_FLOOR, (name, insert, row)


def test_fine_detail_kept(results):
    for name, r in results.items():
        for dose in ("res", "res_10"):
            for pattern, row in r[dose].items():
                assert row["energy_kept"] >= 0.85, (name, dose, pattern, row)
