# lensfinder: strong-lens search in the DESI Legacy Imaging Surveys.
# The workflow decides what runs where; the lensfinder package decides how.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/mock.smk"
include: "workflow/rules/select.smk"
include: "workflow/rules/cutouts.smk"
include: "workflow/rules/trainset.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/infer.smk"
include: "workflow/rules/rank.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/inject.smk"
include: "workflow/rules/selection_function.smk"
include: "workflow/rules/accounting.smk"
include: "workflow/rules/inspection.smk"
include: "workflow/rules/embed.smk"
include: "workflow/rules/sealed.smk"


rule all:
    input:
        final_targets(),
    default_target: True


rule sealed:  # on request: snakemake --cores all sealed (lensfinder.sealed), after the main run
    input:
        rules.sealed_measure.output,
