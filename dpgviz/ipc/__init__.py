"""dpgviz.ipc"""
