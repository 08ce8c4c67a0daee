"""KFP components of kfnas, shipped in the distribution as ``kfnas.components``.

Each component is a thin lightweight KFP component (about ten lines) over one function of
``kfnas.stages``, running on the project image. Only this package and ``kfnas.pipelines`` import
kfp.

To add a component: write ``components/<stage>.py`` with one ``@dsl.component`` whose body imports
``kfnas.stages`` and calls the stage of the same name.
"""
