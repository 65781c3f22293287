"""CTPA-style reports for the inspect-like domain: the pulmonary arteries first, then heart,
mediastinum, lungs, pleura, upper abdomen and bones, and a numbered impression, in the words of a
pulmonary embolism study ("No filling defect in the pulmonary arteries to suggest pulmonary
embolism"), not CT-RATE's. As in reports.py, a positive sentence names its finding with a phrase
from the label set's synonyms and no negation or hedge word; an absent finding is not mentioned
or is plainly negated. Text-only findings (ctpa.TEXT_ONLY) are said as history or incidental notes.
"""

from __future__ import annotations

import numpy as np

from engine.synth.reports import Report, _mm, _Writer

CLINICAL = (
    "Shortness of breath, elevated D-dimer.", "Pleuritic chest pain.",
    "Tachycardia and hypoxia.", "Sudden onset dyspnea.", "Leg swelling and chest pain.",
    "Postoperative desaturation.", "Hemoptysis.",
)
TECHNIQUE = (
    "CT pulmonary angiogram: axial {t} mm images after intravenous contrast, timed to the pulmonary arteries.",
    "CTA chest (pulmonary embolism protocol) with intravenous contrast; {t} mm axial reconstructions.",
    "Contrast-enhanced CT angiography of the pulmonary arteries, {t} mm sections, with MIP reformats.",
)
_SIDE = {"right": "right", "left": "left", "bilateral": "bilateral"}


def _arteries(w: _Writer) -> None:
    f = w.has("Embolism")
    if f is None:
        w.say("No filling defect in the pulmonary arteries to suggest pulmonary embolism.",
              "The pulmonary arteries opacify well to the subsegmental level; no pulmonary embolism is detected.")
        w.impressions.append(w.pick("No pulmonary embolism.", "Negative for pulmonary embolism."))
    else:
        loc, side = f["location"], _SIDE[f["side"]]
        if f["level"] == "main":
            w.say(f"Filling defect in the {loc}, compatible with acute pulmonary embolism.",
                  f"An occlusive filling defect is seen in the {loc}.")
        else:
            w.say(f"Filling defects in the {loc}.", f"Acute pulmonary emboli are present in the {loc}.")
        w.impressions.append(f"Acute {side} pulmonary embolism, {f['level']} level ({loc}).")
    h = w.has("Hypertension")
    if h is not None:
        w.say(f"The main pulmonary artery is dilated to {_mm(h['diameter_mm'])} mm, in keeping with "
              "pulmonary hypertension.", f"Enlarged pulmonary artery, {_mm(h['diameter_mm'])} mm in diameter.")
        w.impressions.append("Pulmonary hypertension.")
    else:
        w.say("The main pulmonary artery is of normal calibre.", "No signs of pulmonary hypertension.")


def _heart_mediastinum(w: _Writer) -> None:
    w.say("Heart size is normal; the right ventricle is not enlarged.", "The cardiac chambers are of normal size.")
    w.say("The thoracic aorta is normal in calibre and opacifies homogeneously.",
          "Normal opacification of the thoracic aorta.")

    def stations(f):
        return ", ".join(p["station"] for p in f["parts"])

    if not w.positive("Lymphadenopathies", lambda f: (
            f"Mediastinal lymphadenopathy ({stations(f)}), up to {_mm(f['size_mm'])} mm in short axis.",
            f"Enlarged lymph nodes are present in the {stations(f)} region."),
            "Mediastinal lymphadenopathy."):
        w.say("No mediastinal or hilar adenopathy.", "No enlarged lymph nodes.")
    if w.has("Node"):
        w.say("Subcentimetre mediastinal lymph nodes are present.", "A few small mediastinal nodes are noted.")


def _lungs(w: _Writer) -> None:
    w.positive("Consolidation", lambda f: (f"Dense consolidation in the {f['location']} with air bronchograms.",
                                           f"There is consolidation of the {f['location']}."),
               lambda f: f"Consolidation in the {f['location']}.")
    w.positive("Opacities", lambda f: (f"Patchy ground-glass opacities in the {f['location']}.",
                                       f"Ground glass opacity is seen in the {f['location']}."),
               "Ground-glass opacities.")
    w.positive("Mass", lambda f: (f"A {_mm(f['size_mm'])} mm mass is seen in the {f['location']}.",
                                  f"Pulmonary mass in the {f['location']}, {_mm(f['size_mm'])} mm."),
               lambda f: f"{_mm(f['size_mm'])} mm mass in the {f['location']}.")
    w.positive("Nodules", lambda f: (f"A {_mm(f['size_mm'])} mm pulmonary nodule in the {f['location']}.",
                                     f"Solid nodule of {_mm(f['size_mm'])} mm in the {f['location']}."),
               lambda f: f"{_mm(f['size_mm'])} mm nodule, {f['location']}.")
    w.positive("Metastases", lambda f: ("Multiple small pulmonary metastases scattered in both lungs.",
                                        f"{f['count']} pulmonary metastases are seen in both lungs."),
               "Pulmonary metastases.")
    w.positive("Edema", lambda f: (f"Smooth septal lines in the {f['location']}, in keeping with interstitial edema.",
                                   f"Interstitial pulmonary edema with septal lines in the {f['location']}."),
               "Interstitial edema.")
    w.positive("Thickening", lambda f: ("Diffuse bronchial wall thickening.",
                                        f"Bronchial wall thickening in both lungs, walls up to {_mm(f['wall_mm'])} mm."),
               "Bronchial wall thickening.")
    where = lambda f: "both lung bases" if f["side"] == "bilateral" else f"the {f['location']}"  # noqa: E731
    w.positive("Atelectasis", lambda f: (f"Dependent atelectasis in {where(f)}.", f"Linear atelectasis at {where(f)}."),
               lambda f: f"Atelectasis in {where(f)}.")
    absent = [p for n, p in (("Consolidation", "consolidation"), ("Mass", "mass"), ("Edema", "edema"),
                             ("Effusions", "pleural effusion")) if not w.has(n)]
    if absent:
        w.findings.append(f"No {', '.join(absent[:-1]) + ' or ' if len(absent) > 1 else ''}{absent[-1]}.")


def _pleura_rest(w: _Writer) -> None:
    def effusion(f):
        side = f["side"]
        if side == "bilateral":
            return ("Small bilateral pleural effusions.", f"Bilateral pleural effusions, up to {_mm(f['size_mm'])} mm.")
        return (f"Small {side} pleural effusion.", f"A {side} pleural effusion, {_mm(f['size_mm'])} mm deep.")

    w.positive("Effusions", effusion, lambda f: f"{_SIDE[f['side']].capitalize()} pleural effusion.")
    if w.has("Lesions"):
        w.say("A hypodense liver lesion, too small to characterize.", "Small hypodense lesion in the liver.")
    if w.has("Others"):
        w.say("Degenerative changes of the thoracic spine.", "A calcified granuloma in the right lung.")


# History and interpretations, which the phantom's image does not carry (ctpa.TEXT_ONLY).
_HISTORY = (("Malignancy", ("History of malignancy.", "Known lung cancer.")),
            ("Metastatic", ("Known metastatic disease, on treatment.", "Metastatic disease in history.")),
            ("Pneumonia", ("Recent pneumonia, treated.", "History of pneumonia.")),
            ("Infection", ("Recent respiratory infection.", "History of infection.")),
            ("Aspiration", ("History of aspiration.", "Recurrent aspiration events.")),
            ("Disease", ("Chronic lung disease in history.", "Known chronic obstructive disease.")))


def _history(w: _Writer) -> None:
    for name, options in _HISTORY:
        if w.has(name):
            w.say(*options)


_SECTIONS = (_arteries, _heart_mediastinum, _lungs, _pleura_rest, _history)


def write_ctpa_report(truth: list[dict], rng: np.random.Generator, meta: dict) -> Report:
    w = _Writer(truth, rng)
    for section in _SECTIONS:
        section(w)
    clinical = CLINICAL[int(rng.integers(len(CLINICAL)))]
    technique = TECHNIQUE[int(rng.integers(len(TECHNIQUE)))].format(t=f"{meta.get('slice_thickness_mm', 1.0):g}")
    impressions = " ".join(f"{i}. {line}" for i, line in enumerate(w.impressions, 1))
    return Report(clinical, technique, " ".join(w.findings), impressions)
