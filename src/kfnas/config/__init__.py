"""What a run asks for: the experiment spec, the named settings and the study chain.

``spec`` holds the strict dataclasses of an experiment spec (YAML in, ``experiment.json`` out,
dotted ``--set`` overrides); ``strict`` the strict dict-to-dataclass reader they share;
``settings`` the named pipeline settings that become overrides; ``studies`` the study chain of a
run, declared once. This layer knows no registry: checking a spec against the spaces, tasks and
algorithms is ``kfnas.validation``'s job.
"""
