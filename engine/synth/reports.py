"""CT-RATE-style reports written from a phantom's truth with a small template grammar.

Sections follow the order radiologists use in CT-RATE (airways, mediastinum, heart, vessels,
lungs, pleura, upper abdomen, bones). Every positive sentence names its finding with a phrase
from the label set's synonyms and carries no negation word; every absent finding is either not
mentioned or mentioned in a clearly negated sentence ("No ... was detected").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CLINICAL = (
    "Cough.", "Shortness of breath.", "Chest pain.", "Fever and cough for three days.", "Dyspnea on exertion.",
    "Follow-up.", "Preoperative evaluation.", "Weight loss.", "Smoking history, screening.", "Hemoptysis.",
)
TECHNIQUE = (
    "Non-contrast chest CT was acquired in the supine position; axial images of {t} mm were reviewed.",
    "Thorax CT without intravenous contrast, {t} mm axial sections, lung and mediastinal windows.",
    "Unenhanced axial CT of the chest from the thoracic inlet to the upper abdomen, {t} mm slices.",
)


@dataclass
class Report:
    clinical: str
    technique: str
    findings: str
    impressions: str


class _Writer:
    """Collects findings and impression sentences; the order of its random picks is the report's
    identity (phantom datasets are reproduced from their seed), so sections run in a fixed order."""

    def __init__(self, truth: list[dict], rng: np.random.Generator):
        self.t = {f["finding"]: f for f in truth}
        self.rng = rng
        self.findings: list[str] = []
        self.impressions: list[str] = []

    def pick(self, *options: str) -> str:
        return options[int(self.rng.integers(len(options)))]

    def has(self, name: str) -> dict | None:
        return self.t.get(name)

    def say(self, *options: str) -> None:
        self.findings.append(self.pick(*options))

    def positive(self, name: str, options, impression) -> bool:
        """When the finding is present: one of options(truth) as a sentence and impression(truth)
        (or the string itself) in the impressions. Returns whether it was present."""
        f = self.has(name)
        if f is None:
            return False
        self.say(*options(f))
        self.impressions.append(impression(f) if callable(impression) else impression)
        return True


def _mm(v) -> str:
    return f"{int(round(float(v)))}"


def _side_phrase(side: str) -> str:
    return {"bilateral": "bilaterally", "right": "on the right", "left": "on the left"}[side]


def _airways_and_heart(w: _Writer) -> None:
    w.say("Trachea and both main bronchi are patent.", "The trachea and main bronchi are open.",
          "Trachea and main bronchi are in midline and patent.")
    w.say("Mediastinal structures were evaluated as suboptimal because contrast was not given.",
          "Evaluation of mediastinal vascular structures is limited on this unenhanced study.")
    if not w.positive("Cardiomegaly", lambda f: (
            f"The heart is enlarged, with a cardiothoracic ratio of about {f['ratio']:.2f}.",
            "Cardiomegaly is present.", f"Cardiomegaly (cardiothoracic ratio about {f['ratio']:.2f})."),
            "Cardiomegaly."):
        w.say("Heart size is normal.", "Heart contour and size are normal.", "Cardiac size is within normal limits.")
    if not w.positive("Pericardial effusion", lambda f: (
            f"Pericardial effusion up to {_mm(f['thickness_mm'])} mm thick is seen.",
            f"There is pericardial effusion measuring {_mm(f['thickness_mm'])} mm at its thickest."),
            "Pericardial effusion."):
        w.say("No pericardial effusion or thickening was observed.", "Pericardial effusion was not detected.")


def _vessels(w: _Writer) -> None:
    def arteries(f):
        arts = " and ".join(f"the {a}" for a in f["arteries"])
        return (f"Coronary artery calcification is seen along {arts}.", f"Calcified coronary plaques are present in {arts}.",
                f"Coronary artery wall calcification is noted in {arts}.")

    coronary = w.positive("Coronary artery wall calcification", arteries, "Coronary artery calcification.")
    aortic = w.positive("Arterial wall calcification", lambda f: (
        "Atherosclerotic calcifications are present in the wall of the thoracic aorta.",
        "Aortic calcification is seen in the arch and descending aorta.",
        "Arterial wall calcification is present along the thoracic aorta."),
        "Atherosclerotic calcification of the thoracic aorta.")
    if not coronary and not aortic:
        w.say("No vascular calcification was detected.",
              "No atherosclerotic calcification was seen in the aorta or coronary arteries.")
    elif not coronary:
        w.say("No coronary calcification was detected.", "Coronary arteries show no calcification.")
    elif not aortic:
        w.findings.append("No aortic calcification was detected.")
    w.say("The calibre of the thoracic aorta is normal.", "Thoracic aorta diameter is within normal limits.")


def _nodes_oesophagus_devices(w: _Writer) -> None:
    def stations(f):
        return ", ".join(p["station"] for p in f["parts"])

    if not w.positive("Lymphadenopathy", lambda f: (
            f"Enlarged lymph nodes are seen in the {stations(f)} region, "
            f"the largest with a short axis of {_mm(f['size_mm'])} mm.",
            f"Lymphadenopathy is present ({stations(f)}), up to {_mm(f['size_mm'])} mm in short axis."),
            lambda f: f"Mediastinal/hilar lymphadenopathy ({stations(f)})."):
        w.say("No lymph node of pathological size was detected in the mediastinum or hila.",
              "No mediastinal or hilar lymphadenopathy was observed.")
    if not w.positive("Hiatal hernia", lambda f: (
            f"A hiatal hernia measuring about {_mm(f['size_mm'])} mm containing air and fluid is seen.",
            f"Sliding hiatal hernia is present, about {_mm(f['size_mm'])} mm."), "Hiatal hernia."):
        w.say("Thoracic esophagus calibre is normal; no hiatal hernia was seen.", "No hiatal hernia was detected.")
    w.positive("Medical material", lambda f: (
        f"A pacemaker is seen in the {f['side']} anterior chest wall with leads extending into the right heart.",
        f"A {f['side']}-sided pacemaker with its leads is noted.") if f["kind"] == "pacemaker" else (
        f"A port catheter is seen in the {f['side']} anterior chest wall with its tip in the superior vena cava.",
        f"A {f['side']}-sided port catheter is present, its tip at the cavoatrial junction."),
        lambda f: "Pacemaker in place." if f["kind"] == "pacemaker" else "Port catheter in place.")


def _lung_findings(w: _Writer) -> None:
    kind = lambda f: "Centrilobular" if f["distribution"] == "upper" else "Panlobular"  # noqa: E731
    w.positive("Emphysema", lambda f: (f"{kind(f)} emphysema is seen in {f['location']}.",
                                       f"Emphysematous changes are present in {f['location']}."), "Emphysema.")
    w.positive("Mosaic attenuation pattern", lambda f: (f"A mosaic attenuation pattern is seen in {f['location']}.",
                                                        f"Mosaic attenuation is noted in {f['location']}."),
               "Mosaic attenuation pattern.")
    w.positive("Bronchiectasis", lambda f: (
        f"Bronchiectasis is seen in the {f['location']}, with bronchi up to {_mm(f['size_mm'])} mm, "
        "larger than the accompanying arteries.",
        f"Cylindrical bronchiectasis is present in the {f['location']}."), lambda f: f"Bronchiectasis in the {f['location']}.")
    w.positive("Peribronchial thickening", lambda f: (
        "Peribronchial thickening is seen in both lungs.",
        f"Bronchial wall thickening is present bilaterally, walls up to {_mm(f['wall_mm'])} mm."), "Peribronchial thickening.")
    w.positive("Consolidation", lambda f: (
        f"Consolidation with air bronchograms is seen in the {f['location']}, about {_mm(f['size_mm'])} mm.",
        f"There is a consolidation area in the {f['location']} containing air bronchograms."),
        lambda f: f"Consolidation in the {f['location']}.")
    w.positive("Lung opacity", lambda f: (
        f"Ground-glass opacity is seen in the {f['location']}, the largest about {_mm(f['size_mm'])} mm.",
        f"Ground glass opacities are present in the {f['location']}."), lambda f: f"Ground-glass opacity in the {f['location']}.")
    w.positive("Lung nodule", lambda f: (
        f"A {_mm(f['size_mm'])} mm solid nodule is seen in the {f['location']}.",
        f"There is a solid pulmonary nodule measuring {_mm(f['size_mm'])} mm in the {f['location']}."),
        lambda f: f"{_mm(f['size_mm'])} mm nodule in the {f['location']}.")
    where = lambda f: "both lower lobes" if f["side"] == "bilateral" else f"the {f['location']}"  # noqa: E731
    w.positive("Atelectasis", lambda f: (f"Subsegmental atelectasis is seen in the posterobasal segment of {where(f)}.",
                                         f"Plate-like atelectasis is present at the base of {where(f)}."),
               lambda f: f"Atelectasis in {where(f)}.")
    w.positive("Pulmonary fibrotic sequela", lambda f: (f"Fibrotic bands are seen in the {f['location']}.",
                                                        f"Subpleural fibrotic sequelae are present in the {f['location']}."),
               "Fibrotic sequelae.")
    w.positive("Interlobular septal thickening", lambda f: (
        f"Interlobular septal thickening is seen in the {f['location']}.",
        f"Thickened interlobular septa are present in the {f['location']}."), "Interlobular septal thickening.")


_LUNG_NEGATIVES = (("Emphysema", "emphysema"), ("Atelectasis", "atelectasis"), ("Bronchiectasis", "bronchiectasis"),
                   ("Interlobular septal thickening", "interlobular septal thickening"),
                   ("Mosaic attenuation pattern", "mosaic attenuation"), ("Peribronchial thickening", "peribronchial thickening"),
                   ("Pulmonary fibrotic sequela", "fibrotic change"))


def _lung_negatives(w: _Writer) -> None:
    lung_any = [n for n in ("Lung nodule", "Consolidation", "Lung opacity") if w.has(n)]
    if not w.has("Lung nodule"):
        w.say("No mass or nodule was detected in either lung.", "No pulmonary nodule was observed.")
    if not w.has("Consolidation") and not w.has("Lung opacity"):
        w.say("No consolidation or ground-glass opacity was detected.",
              "No pneumonic infiltration or consolidation was observed.")
    elif not w.has("Consolidation"):
        w.findings.append("No consolidation was detected.")
    elif not w.has("Lung opacity"):
        w.findings.append("No ground-glass opacity was detected.")
    absent = [phrase for name, phrase in _LUNG_NEGATIVES if not w.has(name)]
    if absent and not lung_any and len(absent) == len(_LUNG_NEGATIVES) and w.rng.random() < 0.5:
        w.findings.append("Lung parenchyma is otherwise unremarkable.")
    elif absent:
        w.findings.append(f"No {_join(absent)} was detected.")


def _pleura_abdomen_bones(w: _Writer) -> None:
    def effusion(f):
        side = f["side"]
        if side == "bilateral":
            return ("Bilateral pleural effusion is present, " + f"up to {_mm(f['size_mm'])} mm thick.",
                    "Pleural effusion is seen on both sides.")
        return (f"Pleural effusion up to {_mm(f['size_mm'])} mm thick is seen {_side_phrase(side)}.",
                f"There is a {side} pleural effusion.")

    if not w.positive("Pleural effusion", effusion, lambda f: {
            "bilateral": "Bilateral pleural effusion.", "right": "Right pleural effusion.",
            "left": "Left pleural effusion."}[f["side"]]):
        w.say("No pleural effusion was observed.", "No pleural effusion or thickening was detected.")
    w.say("Upper abdominal organs included in the sections are unremarkable.",
          "The visualised upper abdominal organs are normal.")
    w.say("Bone structures in the study area are normal.", "No lytic or destructive lesion was detected in the bones.")


_SECTIONS = (_airways_and_heart, _vessels, _nodes_oesophagus_devices, _lung_findings, _lung_negatives, _pleura_abdomen_bones)


def write_report(truth: list[dict], rng: np.random.Generator, meta: dict) -> Report:
    w = _Writer(truth, rng)
    for section in _SECTIONS:
        section(w)
    clinical = CLINICAL[int(rng.integers(len(CLINICAL)))]
    t = meta.get("slice_thickness_mm", 1.0)
    technique = TECHNIQUE[int(rng.integers(len(TECHNIQUE)))].format(t=f"{t:g}")
    impressions = (" ".join(w.impressions) if w.impressions
                   else w.pick("No acute pathology.", "No significant pathology was detected."))
    return Report(clinical, technique, " ".join(w.findings), impressions)


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " or " + items[-1]
