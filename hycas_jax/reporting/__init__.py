"""Tables and plots of certification and attack results. A leaf: nothing that
computes a certificate or an attack imports it."""
