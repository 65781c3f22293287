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
    def __init__(self, truth: list[dict], rng: np.random.Generator):
        self.t = {f["finding"]: f for f in truth}
        self.rng = rng

    def pick(self, *options: str) -> str:
        return options[int(self.rng.integers(len(options)))]

    def has(self, name: str) -> dict | None:
        return self.t.get(name)


def _mm(v) -> str:
    return f"{int(round(float(v)))}"


def _side_phrase(side: str) -> str:
    return {"bilateral": "bilaterally", "right": "on the right", "left": "on the left"}[side]


def write_report(truth: list[dict], rng: np.random.Generator, meta: dict) -> Report:
    w = _Writer(truth, rng)
    s: list[str] = []  # findings sentences
    imp: list[str] = []  # impression sentences
    # Airways.
    s.append(w.pick("Trachea and both main bronchi are patent.", "The trachea and main bronchi are open.",
                    "Trachea and main bronchi are in midline and patent."))
    # Mediastinum and heart.
    s.append(w.pick("Mediastinal structures were evaluated as suboptimal because contrast was not given.",
                    "Evaluation of mediastinal vascular structures is limited on this unenhanced study."))
    if f := w.has("Cardiomegaly"):
        s.append(w.pick(f"The heart is enlarged, with a cardiothoracic ratio of about {f['ratio']:.2f}.",
                        "Cardiomegaly is present.", f"Cardiomegaly (cardiothoracic ratio about {f['ratio']:.2f})."))
        imp.append("Cardiomegaly.")
    else:
        s.append(w.pick("Heart size is normal.", "Heart contour and size are normal.", "Cardiac size is within normal limits."))
    if f := w.has("Pericardial effusion"):
        s.append(w.pick(f"Pericardial effusion up to {_mm(f['thickness_mm'])} mm thick is seen.",
                        f"There is pericardial effusion measuring {_mm(f['thickness_mm'])} mm at its thickest."))
        imp.append("Pericardial effusion.")
    else:
        s.append(w.pick("No pericardial effusion or thickening was observed.", "Pericardial effusion was not detected."))
    if f := w.has("Coronary artery wall calcification"):
        arts = " and ".join(f"the {a}" for a in f["arteries"])
        s.append(w.pick(f"Coronary artery calcification is seen along {arts}.",
                        f"Calcified coronary plaques are present in {arts}.",
                        f"Coronary artery wall calcification is noted in {arts}."))
        imp.append("Coronary artery calcification.")
    if f := w.has("Arterial wall calcification"):
        s.append(w.pick("Atherosclerotic calcifications are present in the wall of the thoracic aorta.",
                        "Aortic calcification is seen in the arch and descending aorta.",
                        "Arterial wall calcification is present along the thoracic aorta."))
        imp.append("Atherosclerotic calcification of the thoracic aorta.")
    if not w.has("Coronary artery wall calcification") and not w.has("Arterial wall calcification"):
        s.append(w.pick("No vascular calcification was detected.", "No atherosclerotic calcification was seen in the aorta or coronary arteries."))
    elif not w.has("Coronary artery wall calcification"):
        s.append(w.pick("No coronary calcification was detected.", "Coronary arteries show no calcification."))
    elif not w.has("Arterial wall calcification"):
        s.append("No aortic calcification was detected.")
    s.append(w.pick("The calibre of the thoracic aorta is normal.", "Thoracic aorta diameter is within normal limits."))
    # Lymph nodes.
    if f := w.has("Lymphadenopathy"):
        st = ", ".join(p["station"] for p in f["parts"])
        s.append(w.pick(f"Enlarged lymph nodes are seen in the {st} region, the largest with a short axis of {_mm(f['size_mm'])} mm.",
                        f"Lymphadenopathy is present ({st}), up to {_mm(f['size_mm'])} mm in short axis."))
        imp.append(f"Mediastinal/hilar lymphadenopathy ({st}).")
    else:
        s.append(w.pick("No lymph node of pathological size was detected in the mediastinum or hila.",
                        "No mediastinal or hilar lymphadenopathy was observed."))
    # Esophagus and hiatus.
    if f := w.has("Hiatal hernia"):
        s.append(w.pick(f"A hiatal hernia measuring about {_mm(f['size_mm'])} mm containing air and fluid is seen.",
                        f"Sliding hiatal hernia is present, about {_mm(f['size_mm'])} mm."))
        imp.append("Hiatal hernia.")
    else:
        s.append(w.pick("Thoracic esophagus calibre is normal; no hiatal hernia was seen.",
                        "No hiatal hernia was detected."))
    if f := w.has("Medical material"):
        if f["kind"] == "pacemaker":
            s.append(w.pick(f"A pacemaker is seen in the {f['side']} anterior chest wall with leads extending into the right heart.",
                            f"A {f['side']}-sided pacemaker with its leads is noted."))
            imp.append("Pacemaker in place.")
        else:
            s.append(w.pick(f"A port catheter is seen in the {f['side']} anterior chest wall with its tip in the superior vena cava.",
                            f"A {f['side']}-sided port catheter is present, its tip at the cavoatrial junction."))
            imp.append("Port catheter in place.")
    # Lungs.
    if f := w.has("Emphysema"):
        kind = "Centrilobular" if f["distribution"] == "upper" else "Panlobular"
        s.append(w.pick(f"{kind} emphysema is seen in {f['location']}.",
                        f"Emphysematous changes are present in {f['location']}."))
        imp.append("Emphysema.")
    if f := w.has("Mosaic attenuation pattern"):
        s.append(w.pick(f"A mosaic attenuation pattern is seen in {f['location']}.",
                        f"Mosaic attenuation is noted in {f['location']}."))
        imp.append("Mosaic attenuation pattern.")
    if f := w.has("Bronchiectasis"):
        s.append(w.pick(f"Bronchiectasis is seen in the {f['location']}, with bronchi up to {_mm(f['size_mm'])} mm, larger than the accompanying arteries.",
                        f"Cylindrical bronchiectasis is present in the {f['location']}."))
        imp.append(f"Bronchiectasis in the {f['location']}.")
    if f := w.has("Peribronchial thickening"):
        s.append(w.pick("Peribronchial thickening is seen in both lungs.",
                        f"Bronchial wall thickening is present bilaterally, walls up to {_mm(f['wall_mm'])} mm."))
        imp.append("Peribronchial thickening.")
    if f := w.has("Consolidation"):
        s.append(w.pick(f"Consolidation with air bronchograms is seen in the {f['location']}, about {_mm(f['size_mm'])} mm.",
                        f"There is a consolidation area in the {f['location']} containing air bronchograms."))
        imp.append(f"Consolidation in the {f['location']}.")
    if f := w.has("Lung opacity"):
        s.append(w.pick(f"Ground-glass opacity is seen in the {f['location']}, the largest about {_mm(f['size_mm'])} mm.",
                        f"Ground glass opacities are present in the {f['location']}."))
        imp.append(f"Ground-glass opacity in the {f['location']}.")
    if f := w.has("Lung nodule"):
        s.append(w.pick(f"A {_mm(f['size_mm'])} mm solid nodule is seen in the {f['location']}.",
                        f"There is a solid pulmonary nodule measuring {_mm(f['size_mm'])} mm in the {f['location']}."))
        imp.append(f"{_mm(f['size_mm'])} mm nodule in the {f['location']}.")
    if f := w.has("Atelectasis"):
        where = "both lower lobes" if f["side"] == "bilateral" else f"the {f['location']}"
        s.append(w.pick(f"Subsegmental atelectasis is seen in the posterobasal segment of {where}.",
                        f"Plate-like atelectasis is present at the base of {where}."))
        imp.append(f"Atelectasis in {where}.")
    if f := w.has("Pulmonary fibrotic sequela"):
        s.append(w.pick(f"Fibrotic bands are seen in the {f['location']}.",
                        f"Subpleural fibrotic sequelae are present in the {f['location']}."))
        imp.append("Fibrotic sequelae.")
    if f := w.has("Interlobular septal thickening"):
        s.append(w.pick(f"Interlobular septal thickening is seen in the {f['location']}.",
                        f"Thickened interlobular septa are present in the {f['location']}."))
        imp.append("Interlobular septal thickening.")
    lung_any = [n for n in ("Lung nodule", "Consolidation", "Lung opacity") if w.has(n)]
    if not w.has("Lung nodule"):
        s.append(w.pick("No mass or nodule was detected in either lung.", "No pulmonary nodule was observed."))
    if not w.has("Consolidation") and not w.has("Lung opacity"):
        s.append(w.pick("No consolidation or ground-glass opacity was detected.", "No pneumonic infiltration or consolidation was observed."))
    elif not w.has("Consolidation"):
        s.append("No consolidation was detected.")
    elif not w.has("Lung opacity"):
        s.append("No ground-glass opacity was detected.")
    negatives = [("Emphysema", "emphysema"), ("Atelectasis", "atelectasis"), ("Bronchiectasis", "bronchiectasis"),
                 ("Interlobular septal thickening", "interlobular septal thickening"),
                 ("Mosaic attenuation pattern", "mosaic attenuation"), ("Peribronchial thickening", "peribronchial thickening"),
                 ("Pulmonary fibrotic sequela", "fibrotic change")]
    absent = [phrase for name, phrase in negatives if not w.has(name)]
    if absent and not lung_any and len(absent) == len(negatives) and w.rng.random() < 0.5:
        s.append("Lung parenchyma is otherwise unremarkable.")
    elif absent:
        s.append(f"No {_join(absent)} was detected.")
    # Pleura.
    if f := w.has("Pleural effusion"):
        side = f["side"]
        if side == "bilateral":
            s.append(w.pick("Bilateral pleural effusion is present, " + f"up to {_mm(f['size_mm'])} mm thick.",
                            "Pleural effusion is seen on both sides."))
        else:
            s.append(w.pick(f"Pleural effusion up to {_mm(f['size_mm'])} mm thick is seen {_side_phrase(side)}.",
                            f"There is a {side} pleural effusion."))
        imp.append({"bilateral": "Bilateral pleural effusion.", "right": "Right pleural effusion.",
                    "left": "Left pleural effusion."}[side])
    else:
        s.append(w.pick("No pleural effusion was observed.", "No pleural effusion or thickening was detected."))
    # Upper abdomen and bones.
    s.append(w.pick("Upper abdominal organs included in the sections are unremarkable.",
                    "The visualised upper abdominal organs are normal."))
    s.append(w.pick("Bone structures in the study area are normal.",
                    "No lytic or destructive lesion was detected in the bones."))
    clinical = CLINICAL[int(rng.integers(len(CLINICAL)))]
    t = meta.get("slice_thickness_mm", 1.0)
    technique = TECHNIQUE[int(rng.integers(len(TECHNIQUE)))].format(t=f"{t:g}")
    impressions = " ".join(imp) if imp else w.pick("No acute pathology.", "No significant pathology was detected.")
    return Report(clinical, technique, " ".join(s), impressions)


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " or " + items[-1]
