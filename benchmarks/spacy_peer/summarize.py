"""Summarize `spacy evaluate` JSON outputs into a markdown table.

Usage: python benchmarks/spacy_peer/summarize.py NAME=DEV_JSON,TEST_JSON [...]
"""
import json
import sys

LABELS = ["PER", "LOC", "ORG", "MISC"]


def main(argv):
    header = ("| config | dev ents_f | test ents_p | test ents_r | test ents_f | "
              + " | ".join(f"test {l} F1" for l in LABELS) + " | CPU words/s (test) |")
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for arg in argv:
        name, paths = arg.split("=", 1)
        dev_p, test_p = paths.split(",")
        dev, test = json.load(open(dev_p)), json.load(open(test_p))
        per = test["ents_per_type"]
        cells = [name, f"{100*dev['ents_f']:.2f}", f"{100*test['ents_p']:.2f}",
                 f"{100*test['ents_r']:.2f}", f"{100*test['ents_f']:.2f}"]
        cells += [f"{100*per[l]['f']:.2f}" if l in per else "-" for l in LABELS]
        cells.append(f"{test['speed']:.0f}")
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(sys.argv[1:])
