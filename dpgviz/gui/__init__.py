"""dpgviz.gui"""
