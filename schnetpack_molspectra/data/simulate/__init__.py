"""Spectra for any molecule: GFN2-xTB (tblite) IR and Raman, PySCF TDA/TDDFT UV-Vis."""
