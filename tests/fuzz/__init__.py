"""The fuzz suite: hostile inputs built at test time, each held to the bad-input contract.

``fixed`` and ``seeded`` hold the cases (``models`` builds broken ONNX graphs for them) on the
frame of ``corpus``; ``child`` runs them in long-lived child processes under a memory limit,
``harness`` starts and watches those children, ``contract`` judges what each case did.
``test_fuzz`` ties them to pytest: one test id per case, and a summary at the end.
"""
