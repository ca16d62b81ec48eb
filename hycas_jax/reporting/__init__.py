"""Tables and plots of certification and attack results. A leaf: nothing that
computes a certificate or an attack imports it. Import the module you need:

- `certify_report`: reading certification logs, certified accuracy, ACR, tables, plots;
- `attack_report`: robust-accuracy statistics, tables and plots of an attack run.
"""
__all__ = ["attack_report", "certify_report"]
