"""The dashboard's side of trustdyn: what the Streamlit pages call.

:mod:`~trustdyn.dashboard.study` finds, stamps and builds the study file;
:mod:`~trustdyn.dashboard.tables` shapes its reads into page tables;
:mod:`~trustdyn.dashboard.figures` draws them (the steering results in
:mod:`~trustdyn.dashboard.steering_figures`); :mod:`~trustdyn.dashboard.lab` runs the live
steered chat. The library below never imports this package.
"""
