"""numpy-only building blocks shared by the GUI and worker processes.

Nothing under core/ imports torch, dearpygui or any other dpgviz subpackage.
"""
