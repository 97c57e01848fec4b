# Visual inspection fed back (lensfinder.portal.inspection): grades from the portal (lensfinder-inspect serve) -> graded
# table, new lenses, hard negatives and rejections for the next run. Not part of `rule all`
# (it needs a grades database that exists only after people grade); run it on request:
#   snakemake inspection --config inspection='{db: grades.sqlite}'


rule inspection:
    input:
        db=lambda wildcards: inspection_config()["db"],
        candidates=inspection_candidates(),
    output:
        graded=f"{RESULTS}/inspection/graded.parquet",
        graded_csv=f"{RESULTS}/inspection/graded.csv",
        graded_fits=f"{RESULTS}/inspection/graded.fits",
        new_lenses=f"{RESULTS}/inspection/new_lenses.csv",
        hard_negatives=f"{RESULTS}/inspection/hard_negatives.csv",
        rejections=f"{RESULTS}/inspection/rejections.csv",
        summary=f"{RESULTS}/inspection/summary.json",
    log:
        f"{RESULTS}/logs/inspection.log",
    params:
        inspection=lambda wildcards: inspection_config(),
        batch=inspection_batch(),
    localrule: True
    conda:
        "../../envs/lensfinder.yaml"
    script:
        "../scripts/inspection.py"
