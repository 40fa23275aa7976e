"""Sphinx configuration of the torchgeo-macl documentation."""

import os
import sys

# document the package of this checkout, also when it is not installed
sys.path.insert(0, os.path.abspath('..'))

import torchgeo_macl

project = 'torchgeo-macl'
author = 'torchgeo-macl contributors'
copyright = '2026, torchgeo-macl contributors'
version = release = torchgeo_macl.__version__

extensions = ['sphinx.ext.autodoc', 'sphinx.ext.napoleon', 'sphinx.ext.viewcode']

# Google-style docstrings
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False

autodoc_member_order = 'bysource'
autodoc_typehints = 'description'
autodoc_default_options = {'members': True, 'show-inheritance': True}
autoclass_content = 'both'

# references to other projects (torch, lightning, ...) stay plain text: the build
# reads nothing from the network
nitpicky = False

exclude_patterns = ['_build']
html_theme = 'furo'
html_title = f'torchgeo-macl {release}'
