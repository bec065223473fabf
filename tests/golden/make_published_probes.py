"""Score the probe predictions of tests/golden/published_probes.json with the authors' own scripts.

    python tests/golden/make_published_probes.py --coin COIN_REPO --dmole DMOLE_REPO --mcitlib MCITLIB_REPO \
        --prism PRISM_REPO --mllm-cl MLLM_CL_REPO

The five are clones of zackschen/CoIN, gcd19/D-MoLE, Ghy0501/MCITlib, LAMDA-CL/Prism and
bjzhb666/MLLM-CL (their commits are recorded in the output); nothing of them is copied here.
MLLM-CL's evaluation scripts (ETrain/Eval/LLaVA/CoIN/eval_*.py, byte for byte the files MCITlib
ships as LoRA-FT/llava/eval/CoIN/eval_*.py) run as published on a test file and a merge.jsonl holding
the probe; Prism's ANLS runs through its own ``evaluate_anls`` (backbone/shared/eval/eval_ucit.py).
MCITlib's caption evaluation (LoRA-FT/llava/eval/CoIN/eval_caption.py) runs as a script with
``CAPTION_SHIMS``. Each probe is one test record and one
prediction; each CoIN script runs as published (``python ETrain/Eval/LLaVA/CoIN/<script> ...``) on a
file tree in its layout holding that record alone, and its printed accuracy is the probe's score.
D-MoLE's scoring lives inside its model evaluation scripts, after generation: the scoring block of
each (named by its first and last line below) runs as written on the probe's output, with the
module's own functions, its heavy imports (the model, torchvision's ``box_area``, the distributed
calls) shimmed. The scores are written back into the probes file as ``golden``;
tests/unit/test_published_goldens.py holds our rules to them.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import types
from pathlib import Path

PROBES = Path(__file__).with_name("published_probes.json")
COIN_EVAL = "ETrain/Eval/LLaVA/CoIN"
ACCURACY = re.compile(r"Accuracy: ([0-9.]+)%")


def commit(repo: Path) -> str:
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True,
                          check=True).stdout.strip()


def run_coin(repo: Path, script: str, args: list[str]) -> float:
    done = subprocess.run([sys.executable, f"{COIN_EVAL}/{script}", *args], cwd=repo, capture_output=True,
                          text=True, env={"PYTHONPATH": str(repo), "PATH": "/usr/bin:/bin"})
    if done.returncode != 0:
        return float("nan")  # the script stops: the probe has no score (recorded as null)
    return float(ACCURACY.findall(done.stdout)[-1])


def write(path: Path, value) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(value if isinstance(value, str) else json.dumps(value))
    return path


def coin_probe(repo: Path, rule: str, probe: dict, scratch: Path) -> float:
    record, prediction = probe.get("record", {}), probe.get("prediction", "")
    result = write(scratch / "merge.jsonl", json.dumps({"question_id": "q1", "text": prediction,
                                                        "prompt": "Question?\nAnswer with the option's letter."}))
    if rule == "coin_scienceqa":
        base = scratch / "ScienceQA"
        write(base / "pid_splits.json", {"test": ["q1"]})
        write(base / "problems.json", {"q1": {"choices": record["choices"], "answer": record["answer_index"]}})
        return run_coin(repo, "eval_science_qa.py", ["--base-dir", str(base), "--result-file", str(result),
                                                     "--output-file", str(scratch / "out.json"),
                                                     "--output-result", str(scratch / "result.json")])
    if rule == "coin_grounding":
        test = write(scratch / "test.json", [{"question_id": "q1", "answer_bbox": record["answer"],
                                              "size": record["size"]}])
        return run_coin(repo, "eval_grounding.py", ["--test-file", str(test), "--result-file", str(result)])
    if rule == "coin_textvqa":
        annotations = write(scratch / "val.json", {"data": [{"question_id": "q1", "answers": record["answers"]}]})
        return run_coin(repo, "eval_textvqa.py", ["--annotation-file", str(annotations), "--result-file",
                                                  str(result)])
    if rule == "coin_imagenet":
        test = write(scratch / "test.json", [{"question_id": "q1", "answer": record["answer"]}])
        return run_coin(repo, "eval_ImagetNet.py", ["--test-file", str(test), "--result-file", str(result),
                                                    "--output-dir", str(scratch)])
    if rule == "coin_ocrvqa":
        test = write(scratch / "test.json", [{"question_id": "q1", "answer": record["answer"]}])
        return run_coin(repo, "eval_ocrvqa.py", ["--annotation-file", str(test), "--result-file", str(result),
                                                 "--output-dir", str(scratch)])
    if rule == "coin_gqa":  # convert_gqa_for_eval.py, then eval_gqa.py, as scripts/*/Eval/*GQA.sh run them
        split = probe["split"]
        merge = write(scratch / "merge.jsonl", "".join(json.dumps({"question_id": f"q{n}", "text": item["prediction"]})
                                                       + "\n" for n, item in enumerate(split)))
        questions = {f"q{n}": {"answer": item["answer"], "isBalanced": item["balanced"], "question": "what is it?",
                               "semantic": [{"operation": "select", "argument": "thing"}],
                               "groups": {"global": "objects"}, "types": {"structural": "query", "semantic": "obj"}}
                     for n, item in enumerate(split)}
        write(scratch / "cl_dataset" / "GQA" / "testdev_balanced_questions.json", questions)
        subprocess.run([sys.executable, f"{repo}/{COIN_EVAL}/convert_gqa_for_eval.py", "--src", str(merge), "--dst",
                        str(scratch / "testdev_balanced_predictions.json")], check=True, capture_output=True)
        done = subprocess.run([sys.executable, f"{repo}/{COIN_EVAL}/eval_gqa.py", "--tier", "testdev_balanced",
                               "--path", str(scratch)], cwd=scratch, capture_output=True, text=True)
        found = ACCURACY.findall(done.stdout)
        return float(found[0]) if found else float("nan")
    if rule == "upper_case_exact":
        test = write(scratch / "test.json", [{"question_id": "q1", "answer": record["answer"]}])
        return run_coin(repo, "eval_vizwiz.py", ["--annotation-file", str(test), "--result-file", str(result)])
    raise KeyError(rule)


VQA_EVAL = "ETrain/utils/LAVIS/common/vqa_tools/VQA/PythonEvaluationTools/vqaEvaluation/vqaEval.py"


def official_vqa(repo: Path, probe: dict) -> float:
    """``VQAEval.evaluate`` as written, on one question; the VQA API objects it reads (``getQuesIds``
    and ``qa``) are stand-ins holding the probe, with answer ids as the official files have."""
    namespace: dict = {"__name__": "vqaEval"}
    exec(compile((repo / VQA_EVAL).read_text(), VQA_EVAL, "exec"), namespace)

    class Questions:
        def __init__(self, answers: list) -> None:
            self.qa = {1: {"answers": answers, "question_type": "what", "answer_type": "other"}}

        def getQuesIds(self) -> list[int]:  # noqa: N802 (the VQA API's name)
            return [1]

    truth = Questions([{"answer": answer, "answer_id": n} for n, answer in enumerate(probe["record"]["answers"], 1)])
    result = Questions([])
    result.qa[1] = {"answer": probe["prediction"]}
    evaluation = namespace["VQAEval"](truth, result, n=2)
    evaluation.updateProgress = lambda progress: None  # it writes a progress bar to stdout
    evaluation.evaluate()
    return evaluation.accuracy["overall"]


def scoring_block(source: str, first: str, last: str) -> str:
    """The lines of ``source`` from the one starting with ``first`` to the one starting with ``last``,
    dedented to the first line's indentation."""
    lines = source.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith(first))
    end = next(i for i in range(start, len(lines)) if lines[i].strip().startswith(last))
    indent = len(lines[start]) - len(lines[start].lstrip())
    return "\n".join(line[indent:] for line in lines[start:end + 1])


def dmole_module(repo: Path, path: str) -> tuple[dict, str]:
    """The functions of a D-MoLE evaluation script with its heavy imports shimmed, and its source."""
    import numpy  # noqa: F401  (torch needs it; imported first so its absence is clear)
    import torch

    source = (repo / path).read_text()
    shims = {"torchvision": types.ModuleType("torchvision"), "torchvision.ops": types.ModuleType("torchvision.ops"),
             "torchvision.ops.boxes": types.ModuleType("torchvision.ops.boxes")}
    shims["torchvision.ops.boxes"].box_area = lambda b: (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    kept = [line for line in source.splitlines() if not re.match(r"^(from|import) ", line)
            or re.match(r"^(import (re|json|torch|random|itertools|os)|from functools)", line)]
    namespace: dict = {"torch": torch, "box_area": shims["torchvision.ops.boxes"].box_area}
    definitions = "\n".join(kept).split('\nif __name__ == "__main__":')[0]
    exec(compile(definitions, path, "exec"), namespace)  # defines the functions only
    return namespace, source


def dmole_probe(repo: Path, rule: str, probe: dict) -> float:
    if rule == "dmole_grounding":
        record, prediction = probe["record"], probe["prediction"]
        namespace, source = dmole_module(repo, "eval/refcoco/evaluate_grounding.py")
        block = scoring_block(source, "correct = total_cnt = 0", "correct += 1")
        namespace["PATTERN"] = re.compile(r"\[*\[(.*?),(.*?),(.*?),(.*?)\]\]*")  # the script's, line 306
        namespace["merged_outputs"] = [{"answer": prediction, "gt_bbox": record["pixel_box"],
                                        "hw": [record["size"][1], record["size"][0]]}]
        exec(block, namespace)
        return 100.0 * namespace["correct"] / namespace["total_cnt"]
    if rule == "dmole_option":
        namespace, _ = dmole_module(repo, "eval/vqa/evaluate_multi_choice.py")
        batch = probe["batch"]  # one batch of the script's loader, in order: options[0] parses all
        first = dict(zip("ABCDE", batch[0]["options"]))  # the dataset's ``options`` of the first item
        try:
            parsed = [namespace["post_process"](item["prediction"], first) for item in batch]
        except IndexError:
            return float("nan")  # post_process stops on an empty output
        return 100.0 * sum(answer == item["answer"] for answer, item in zip(parsed, batch)) / len(batch)
    if rule == "dmole_exact":
        namespace, source = dmole_module(repo, "eval/vqa/evaluate_vqa.py")
        namespace["print"] = lambda *args: None  # the function prints its whole input
        entries = [{"answer": probe["prediction"], "annotation": probe["record"]["answers"]}]
        return 100.0 * namespace["evaluate_exact_match_accuracy"](entries)
    if rule == "dmole_vqa_score":
        sys.path.insert(0, str(repo / "eval" / "vqa"))
        from textvqa_eval import TextVQAAccuracyEvaluator  # the module evaluate_vqa.py imports

        entries = [{"pred_answer": probe["prediction"], "gt_answers": probe["record"]["answers"]}]
        return 100.0 * TextVQAAccuracyEvaluator().eval_pred_list(entries)
    raise KeyError(rule)


# Shims for MCITlib's eval_caption.py: its API-scoring imports (openai, nltk) are never called on
# the path that prints the COCO metrics, and COCOEvalCap's SPICE (not among the metrics it prints)
# downloads Stanford CoreNLP at first use. Nothing else is touched.
CAPTION_SHIMS = """
import sys, types
for name in ("openai", "nltk", "nltk.translate", "nltk.translate.bleu_score", "nltk.translate.meteor_score"):
    sys.modules[name] = types.ModuleType(name)
sys.modules["openai"].OpenAI = None
bleu = sys.modules["nltk.translate.bleu_score"]
bleu.sentence_bleu = bleu.SmoothingFunction = None
sys.modules["nltk.translate.meteor_score"].meteor_score = None
import pycocoevalcap.eval as evaluation
class NoSpice:
    def compute_score(self, gts, res):
        return 0.0, [0.0] * len(gts)
    def method(self):
        return "SPICE (shimmed)"
evaluation.Spice = NoSpice
"""


def coco_files(split: list[dict], scratch: Path) -> tuple[Path, Path]:
    """The COCO caption file (image ids 1..N, as MCITlib's position join needs) and the results file."""
    annotations = [{"image_id": number, "id": 100 * number + k, "caption": caption}
                   for number, item in enumerate(split, start=1) for k, caption in enumerate(item["references"])]
    truth = write(scratch / "val_coco_type.json", {"images": [{"id": n} for n in range(1, len(split) + 1)],
                                                   "annotations": annotations})
    results = write(scratch / "results.json", [{"image_id": number, "caption": item["prediction"]}
                                               for number, item in enumerate(split, start=1)])
    return truth, results


def caption_probe(mcitlib: Path, dmole: Path, rule: str, probe: dict, scratch: Path) -> float:
    truth, results = coco_files(probe["split"], scratch)
    write(scratch / "shims" / "sitecustomize.py", CAPTION_SHIMS)
    env = {"PYTHONPATH": str(scratch / "shims"), "PATH": "/usr/bin:/bin"}
    if rule == "mcitlib_caption":
        merge = write(scratch / "merge.jsonl", "".join(json.dumps({"question_id": n, "text": item["prediction"]}) + "\n"
                                                       for n, item in enumerate(probe["split"], start=1)))
        done = subprocess.run([sys.executable, str(mcitlib / "LoRA-FT/llava/eval/CoIN/eval_caption.py"),
                               "--annotation-file", str(truth), "--result-file", str(merge), "--output-dir",
                               str(scratch)], capture_output=True, text=True, env=env, cwd=scratch)
        return float(re.findall(r"Average: ([0-9.]+)%", done.stdout)[-1])
    source = (dmole / "eval/caption/evaluate_caption.py").read_text()
    block = scoring_block(source, "coco = COCO(annotation)", "coco_eval.evaluate()")
    program = CAPTION_SHIMS + "\nfrom pycocotools.coco import COCO\nfrom pycocoevalcap.eval import COCOEvalCap\n" + \
        f"annotation, results_file = {str(truth)!r}, {str(results)!r}\n" + block + \
        "\nprint('CIDEr', coco_eval.eval['CIDEr'])\n"
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, env=env, cwd=scratch)
    return 100.0 * float(re.findall(r"CIDEr ([0-9.e-]+)", done.stdout)[-1])


MLLM_CL_EVAL = "ETrain/Eval/LLaVA/CoIN"
MLLM_CL_SCRIPTS = {"mllm_cl_ai2d": "eval_ai2d.py", "mllm_cl_pvqa": "eval_pvqa.py", "mllm_cl_sci": "eval_sci.py",
                   "mllm_cl_fin": "eval_finvis.py", "mllm_cl_ocr": "eval_ocr.py", "mllm_cl_sat": "eval_sat.py"}
OCR_FINAL = re.compile(r"'Final Score Norm': ([0-9.]+)")
OVERALL_ACCURACY = re.compile(r"^Accuracy: ([0-9.]+)%", re.MULTILINE)  # eval_sat.py then prints 'Count Accuracy'



def mllm_cl_probe(repo: Path, rule: str, probe: dict, scratch: Path) -> float:
    """The probe's records as a test file, its predictions as the merge.jsonl the inference writes
    (``prompt`` is the record's text, as model_ai2d.py line 124 writes it), scored by the script."""
    items = probe.get("split") or [{"prediction": probe["prediction"], **probe["record"]}]
    records = [{key: value for key, value in item.items() if key != "prediction"} for item in items]
    annotations = [{"question_id": f"q{n}", "image": "img.jpg", **record} for n, record in enumerate(records)]
    results = [{"question_id": f"q{n}", "prompt": record.get("text", "Question?"), "text": item["prediction"]}
               for n, (item, record) in enumerate(zip(items, records))]
    test = write(scratch / "test.json", annotations)
    merge = write(scratch / "merge.jsonl", "".join(json.dumps(result) + "\n" for result in results))
    done = subprocess.run([sys.executable, f"{MLLM_CL_EVAL}/{MLLM_CL_SCRIPTS[rule]}", "--annotation-file", str(test),
                           "--result-file", str(merge), "--output-dir", str(scratch)], cwd=repo, capture_output=True,
                          text=True, env={"PATH": "/usr/bin:/bin"})
    # the score the script prints, even where it stops later (eval_sat.py divides by its Count questions
    # after printing the accuracy, so a split without them stops there); nothing printed: no score
    printed = (OCR_FINAL if rule == "mllm_cl_ocr" else OVERALL_ACCURACY).findall(done.stdout)
    return float(printed[0]) if printed else float("nan")


def prism_probe(repo: Path, probe: dict, scratch: Path) -> float:
    annotation = write(scratch / "test.json", [{"question_id": "q1", "answer": probe["record"]["answer"]}])
    result = write(scratch / "merge.jsonl", json.dumps({"question_id": "q1", "text": probe["prediction"]}) + "\n")
    write(scratch / "shims" / "sitecustomize.py", CAPTION_SHIMS)  # eval_ucit.py imports the caption evaluation
    program = (f"import sys; sys.path.insert(0, {str(repo)!r})\n"
               "from backbone.shared.eval.eval_ucit import evaluate_anls\n"
               f"print('ANLS', evaluate_anls({str(annotation)!r}, {str(result)!r}, None)['anls'])\n")
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, cwd=scratch,
                          env={"PYTHONPATH": str(scratch / "shims"), "PATH": "/usr/bin:/bin"})
    return float(re.findall(r"ANLS ([0-9.e-]+)", done.stdout)[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--coin", type=Path, required=True)
    parser.add_argument("--dmole", type=Path, required=True)
    parser.add_argument("--mcitlib", type=Path, required=True)
    parser.add_argument("--prism", type=Path, required=True)
    parser.add_argument("--mllm-cl", type=Path, required=True)
    args = parser.parse_args()
    data = json.loads(PROBES.read_text())
    data["sources"] = {"zackschen/CoIN": commit(args.coin), "gcd19/D-MoLE": commit(args.dmole),
                       "Ghy0501/MCITlib": commit(args.mcitlib), "LAMDA-CL/Prism": commit(args.prism),
                       "bjzhb666/MLLM-CL": commit(args.mllm_cl)}
    for rule, probes in data["rules"].items():
        for probe in probes:
            with tempfile.TemporaryDirectory() as scratch:
                if rule == "vqa_accuracy":  # the sound metric, against the official VQA evaluator CoIN ships
                    score = official_vqa(args.coin, probe)
                elif rule in ("mcitlib_caption", "coco_cider"):
                    score = caption_probe(args.mcitlib, args.dmole, rule, probe, Path(scratch))
                elif rule in MLLM_CL_SCRIPTS:
                    score = mllm_cl_probe(args.mllm_cl, rule, probe, Path(scratch))
                elif rule == "prism_anls":
                    score = prism_probe(args.prism, probe, Path(scratch))
                elif rule.startswith(("coin_", "upper_")):
                    score = coin_probe(args.coin, rule, probe, Path(scratch))
                else:
                    score = dmole_probe(args.dmole, rule, probe)
            probe["golden"] = None if score != score else round(score, 2)
    PROBES.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {PROBES}: {sum(len(p) for p in data['rules'].values())} probes")


if __name__ == "__main__":
    main()
