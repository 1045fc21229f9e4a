"""Class names that are a fact of a source, not of its files: a source that registers them (`classes=`) lets a grid
know its number of classes before the data is on disk. Each source that declares a list here loads exactly it."""
from __future__ import annotations


def numbered(n: int) -> tuple[str, ...]:
    """Names of classes known by their number only: "0" .. "n-1"."""
    return tuple(str(i) for i in range(n))


DIGITS = numbered(10)
LETTERS_A_TO_J = tuple("ABCDEFGHIJ")  # notMNIST
TABULAR_CLASSES = ("inlier", "outlier")

# Kuzushiji-MNIST: ten cursive hiragana, in torchvision's order (KMNIST.classes), romanised.
KMNIST = ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo")
FASHION = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
CIFAR10 = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR100 = (  # the fine labels, in the order of the dataset's meta file
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle", "bottle",
    "bowl", "boy", "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar", "cattle",
    "chair", "chimpanzee", "clock", "cloud", "cockroach", "couch", "crab", "crocodile", "cup", "dinosaur",
    "dolphin", "elephant", "flatfish", "forest", "fox", "girl", "hamster", "house", "kangaroo", "keyboard",
    "lamp", "lawn_mower", "leopard", "lion", "lizard", "lobster", "man", "maple_tree", "motorcycle", "mountain",
    "mouse", "mushroom", "oak_tree", "orange", "orchid", "otter", "palm_tree", "pear", "pickup_truck", "pine_tree",
    "plain", "plate", "poppy", "porcupine", "possum", "rabbit", "raccoon", "ray", "road", "rocket",
    "rose", "sea", "seal", "shark", "shrew", "skunk", "skyscraper", "snail", "snake", "spider",
    "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank", "telephone", "television", "tiger",
    "tractor", "train", "trout", "tulip", "turtle", "wardrobe", "whale", "willow_tree", "wolf", "woman", "worm",
)  # fmt: skip
# The 30 alphabets of Omniglot's background set; its "small" subsets (the files dadf reads) hold 8 of them.
OMNIGLOT_ALPHABETS = (
    "Alphabet_of_the_Magi", "Anglo-Saxon_Futhorc", "Arcadian", "Armenian", "Asomtavruli_(Georgian)", "Balinese",
    "Bengali", "Blackfoot_(Canadian_Aboriginal_Syllabics)", "Braille", "Burmese_(Myanmar)", "Cyrillic",
    "Early_Aramaic", "Futurama", "Grantha", "Greek", "Gujarati", "Hebrew", "Inuktitut_(Canadian_Aboriginal_Syllabics)",
    "Japanese_(hiragana)", "Japanese_(katakana)", "Korean", "Latin", "Malay_(Jawi_-_Arabic)", "Mkhedruli_(Georgian)",
    "N_Ko", "Ojibwe_(Canadian_Aboriginal_Syllabics)", "Sanskrit", "Syriac_(Estrangelo)", "Tagalog", "Tifinagh",
)  # fmt: skip
