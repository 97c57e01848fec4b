# The embedded default (lensfinder.mock): a miniature DR10-south tree written where survey.root points.
if config["survey"]["source"] == "mock":
    MOCK_FILES = lfw.mock_files(config)

    rule mock_survey:
        output:
            bricks=MOCK_FILES["bricks"],
            sweeps=MOCK_FILES["sweeps"],
            coadds=MOCK_FILES["coadds"],
            catalogues=MOCK_FILES["catalogues"],
            truth=MOCK_FILES["truth"],
            manifest=MOCK_FILES["manifest"],
        log:
            "logs/mock_survey.log",
        params:
            mock=config["mock"],
        threads: 4  # bricks rendered in parallel (at most the cores given)
        conda:
            "../../envs/lensfinder.yaml"
        script:
            "../scripts/mock_survey.py"
