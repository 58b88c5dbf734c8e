"""Opt-in resilience policies and their machinery, interpreted.

``hedge`` (a second attempt after a delay, and the hedged call) and
``outlier`` (ejection rules and their arithmetic). They stay out of the
compiled set: the plain call's path never enters them (a hedged call costs
its own, measured in bench/README.rst), and their values are public.
"""
