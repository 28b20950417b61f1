"""The fuzz suite: hostile inputs built at test time, each held to the bad-input contract.

``corpus`` builds the cases, ``child`` runs them in long-lived child processes under a memory
limit, ``harness`` starts and watches those children, ``contract`` judges what each case did.
``test_fuzz`` ties them to pytest: one test id per case, and a summary at the end.
"""
