"""CheckList (Ribeiro et al., ACL 2020) behavioural tests as a referee scorer.

``schema`` (the competition's ``checklist:`` section), ``suite`` (building with Editor/Perturb, loading
host suites, export, wiring a competition), ``scorer`` (statistics, aggregate and details via
checklist's ``run_from_file``), ``matrix`` (capability x test-type tables), ``library`` (importing
checklist 0.0.11 on Python 3.11). The plugin is ``referee.plugins.builtin.checklist``.
"""
