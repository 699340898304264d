"""The world model: transitions, rationales and the model client (`model`), the virtual web server
for synthetic trajectories (`synthesis`), and its fidelity (`fidelity`: STR / Sim. / O/A).
"""
