"""MLOps adapter: the ``dvc repro`` pipeline's stage scripts, MLflow tracking and the registry.

Stages (``dvc.yaml``; each ``python -m mlops.<stage>`` reads only its ``params.yaml`` keys)::

    prepare   base dataset + data/labels/  -> data/train_set/, data/episodes/
    teacher   SAM teacher embeddings of the distillation images -> pipeline/teacher/
    distill   coarse-to-fine adapter distillation               -> pipeline/distilled/
    train     episodic meta-training                            -> pipeline/model/
    evaluate  model and prototype baseline on the fixed episodes -> pipeline/eval/, metrics/
    register  MLflow model version, alias ``challenger``, promotion gate -> ``champion``

:mod:`mlops.registry` resolves ``models:/dinoseg-segmenter@champion`` for the core (entry point
``dinoseg.model_resolvers``). Imports of MLflow stay inside functions: nothing runs at import.
"""
