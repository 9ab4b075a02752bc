"""The figures Yao et al. 2020 report (REFERENCE.md section 1), printed beside ours."""

# percent accuracies on the 10k test set (Fig. 3 and text)
YAO2020 = {"float": 97.99, "quantized": 96.92, "transferred": 95.07, "hybrid": 96.19}

# percent error rates of the three convolver groups, the split-image mode and the training
YAO_GROUPS_BEFORE = [4.79, 6.60, 6.20]
YAO_GROUPS_AFTER = [3.41, 4.86, 3.86]
YAO_SPLIT = (93.86, 95.83)
YAO_TRAIN_ERROR = (4.82, 3.21)
