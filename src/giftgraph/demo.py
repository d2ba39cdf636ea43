"""Seed one realistic demo family (`giftgraph demo-data`), deterministically from a seed."""

from __future__ import annotations

import random
import re
import unicodedata
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, NamedTuple

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from giftgraph.auth import hash_password
from giftgraph.config import Settings
from giftgraph.db import models as m
from giftgraph.db.engine import create_database
from giftgraph.events import ENTITY_TYPES, FAMILY_TOPIC, snapshot
from giftgraph.validation import store_from_url

DEMO_EMAIL = "demo@giftgraph.dev"
DEMO_PASSWORD = "demo-password-123"  # noqa: S105 - the published demo login, not a secret
FAMILY_NAME = "The Demo Family"
EMAIL_DOMAIN = "giftgraph.dev"
# (email local part, first name, role); the first one is DEMO_EMAIL.
USERS = (("demo", "Alex", m.Role.ADMIN), ("sam", "Sam", m.Role.MEMBER),
         ("jamie", "Jamie", m.Role.MEMBER))

N_GIFTS = 300
N_LISTS = 30
N_ITEMS = 600
N_COMMENTS = 80
RECENT_ITEMS = 50  # items whose history goes into the activity feed
RECENT_COMMENTS = 15
CHUNK = 100  # rows per flush, so the progress bars move
PHASES = ("users", "persons", "occasions", "lists", "gifts", "items", "comments", "events")
CENT = Decimal("0.01")
BUDGET_TBD = Decimal("100.00")  # "has a budget"; _fit_budgets() sets the amount
DAY = 86_400.0


@dataclass(frozen=True)
class DemoLogin:
    email: str
    password: str


# ---------------------------------------------------------------- people


class _Relative(NamedTuple):
    relationship: str
    gender: str
    ages: tuple[int, int]
    surname: str  # which surname: family | grand | niece | friend


RELATIVES = (
    _Relative("Mom", "F", (56, 68), "family"),
    _Relative("Dad", "M", (58, 70), "family"),
    _Relative("Sister", "F", (30, 40), "niece"),
    _Relative("Brother", "M", (22, 34), "family"),
    _Relative("Grandpa", "M", (80, 92), "grand"),
    _Relative("Grandma", "F", (78, 90), "grand"),
    _Relative("Niece", "F", (6, 13), "niece"),
    _Relative("Nephew", "M", (3, 10), "niece"),
    _Relative("Aunt", "F", (50, 64), "grand"),
    _Relative("Cousin", "M", (19, 29), "grand"),
    _Relative("Best friend", "F", (28, 40), "friend"),
    _Relative("Friend", "M", (28, 45), "friend"),
)
# Called by relationship rather than by first name in list and occasion names.
CALLED_BY_ROLE = frozenset({"Mom", "Dad", "Grandpa", "Grandma"})
KIDS = frozenset({"Niece", "Nephew"})

FIRST_NAMES: dict[tuple[str, str], tuple[str, ...]] = {
    ("F", "kid"): ("Olivia", "Ava", "Sophia", "Mia", "Harper", "Luna", "Nora", "Zoe"),
    ("M", "kid"): ("Noah", "Liam", "Ethan", "Mason", "Leo", "Owen", "Theo", "Miles"),
    ("F", "young"): ("Emily", "Sarah", "Jessica", "Megan", "Rachel", "Lauren", "Natalie"),
    ("M", "young"): ("Daniel", "Matthew", "Ryan", "Kevin", "Andrew", "Tyler", "Marcus"),
    ("F", "middle"): ("Linda", "Susan", "Karen", "Patricia", "Deborah", "Julie", "Denise"),
    ("M", "middle"): ("Robert", "Michael", "David", "James", "Richard", "Thomas", "Mark"),
    ("F", "old"): ("Dorothy", "Betty", "Margaret", "Shirley", "Joan", "Evelyn", "Ruth"),
    ("M", "old"): ("Harold", "Walter", "George", "Frank", "Eugene", "Raymond", "Arthur"),
}
SURNAMES = ("Carter", "Nguyen", "Alvarez", "Bennett", "Okafor", "Russo", "Kowalski", "Patel",
            "Sullivan", "Hughes", "Lindqvist", "Moreno", "Brooks", "Tanaka", "Fischer")
FRIENDS: dict[str, tuple[tuple[str, str], ...]] = {
    "F": (("Priya", "Shah"), ("Aisha", "Johnson"), ("Hannah", "Kim"), ("Leila", "Haddad")),
    "M": (("Marcus", "Lee"), ("Diego", "Ramirez"), ("Tomás", "Silva"), ("Ben", "Goldberg")),
}
PERSON_NOTES: dict[str, tuple[str, ...]] = {
    "Mom": ("Prefers experiences over things. Already has plenty of candles.",
            "Loves anything handmade; favorite color is teal."),
    "Dad": ("Says he 'doesn't need anything' - practical gifts land best.",
            "Size L shirts, 10.5 shoes. Really into grilling lately."),
    "Sister": ("Moving to a smaller apartment this year, so nothing bulky.",
               "Cutting back on caffeine; ask before buying coffee things."),
    "Brother": ("Just started a new job with a long commute.",
                "Size M. Already has every game console."),
    "Grandpa": ("Large-print books, please. Loves a good history podcast.",
                "Prefers a handwritten card; keep gifts simple."),
    "Grandma": ("Loves photos of the grandkids; always keeps the cards.",
                "Shares a tablet with Grandpa; a digital photo frame would be a hit."),
    "Niece": ("Reading chapter books now and obsessed with horses this year.",
              "Grows fast - check sizes with her mom before buying clothes."),
    "Nephew": ("Loves anything with wheels. Check with his mom before big gifts.",
               "Saving up for a bike; money toward it is welcome."),
    "Aunt": ("Travels a lot - small and packable is best.",
             "Hosts Thanksgiving every year; a nice host gift goes a long way."),
    "Cousin": ("Finishing college this spring; on a tight budget.",
               "Just got his first apartment."),
    "Best friend": ("Birthday dinner is a tradition - book somewhere nice.",
                    "Vegetarian. Loves plants but travels too much for fussy ones."),
    "Friend": ("We do a $50 cap with each other.",
               "Training for a half marathon in the fall."),
}


# ---------------------------------------------------------------- catalog


class _Product(NamedTuple):
    name: str
    store: str  # key of _url(); "" for gifts with no link
    price: str | None
    variants: tuple[str, ...] = ()


CATALOG: dict[str, tuple[_Product, ...]] = {
    "reading": (
        _Product("Tomorrow, and Tomorrow, and Tomorrow by Gabrielle Zevin", "bookshop", "18.99",
                 ("Hardcover", "Paperback")),
        _Product("Lessons in Chemistry by Bonnie Garmus", "bookshop", "17.99",
                 ("Hardcover", "Paperback")),
        _Product("The Covenant of Water by Abraham Verghese", "bookshop", "21.49",
                 ("Hardcover", "Large Print")),
        _Product("Project Hail Mary by Andy Weir", "bookshop", "16.99", ("Hardcover", "Paperback")),
        _Product("Bookshop.org Gift Card", "bookshop", "50.00", ("$25", "$50")),
        _Product("Kindle Paperwhite Signature Edition", "amazon", "189.99",
                 ("Agave Green", "Metallic Black", "Raspberry")),
        _Product("Personalized Leather Bookmark", "etsy", "14.00",
                 ("Brown", "Tan", "Black", "Burgundy")),
        _Product("Book Lovers' Page Holder", "uncommongoods", "18.00", ("Walnut", "Cherry")),
        _Product("Book Nook Shelf Insert Kit", "etsy", "75.00", ("Tokyo Alley", "Magic Library")),
    ),
    "hiking": (
        _Product("Osprey Talon 22 Daypack", "rei", "160.00",
                 ("Ceramic Blue", "Stealth Black", "Eclipse Grey")),
        _Product("Darn Tough Hiker Micro Crew Socks", "rei", "27.00",
                 ("Men's M", "Men's L", "Women's M")),
        _Product("Black Diamond Spot 400 Headlamp", "rei", "49.95", ("Black", "Octane", "Azul")),
        _Product("Hydro Flask 32 oz Wide Mouth Bottle", "rei", "44.95",
                 ("Pacific", "Snapper", "Black", "Agave")),
        _Product("Merrell Moab 3 Hiking Shoes", "rei", "110.00",
                 ("Men's 9", "Men's 10.5", "Women's 8")),
        _Product("National Parks Scratch-Off Poster", "uncommongoods", "40.00"),
        _Product("Patagonia Nano Puff Jacket", "rei", "239.00",
                 ("Men's M", "Men's L", "Women's S", "Women's M")),
    ),
    "cooking": (
        _Product("Le Creuset Signature Round Dutch Oven, 5.5 qt", "williams-sonoma", "420.00",
                 ("Flame", "Marseille", "Sage")),
        _Product("Lodge Cast Iron Skillet", "amazon", "29.90", ("10.25-inch", "12-inch")),
        _Product("ThermoWorks Thermapen ONE", "amazon", "105.00", ("Red", "Black", "Blue")),
        _Product("Ooni Koda 12 Gas Pizza Oven", "amazon", "399.00"),
        _Product("Wüsthof Classic Chef's Knife", "williams-sonoma", "170.00",
                 ("6-inch", "8-inch")),
        _Product("Salt Fat Acid Heat by Samin Nosrat", "bookshop", "40.00"),
        _Product("Microplane Premium Zester", "amazon", "15.95", ("Black", "Red")),
        _Product("Personalized Olive Wood Cutting Board", "etsy", "58.00",
                 ("Family Name Engraving", "Handwritten Recipe Engraving")),
        _Product("Personalized Recipe Binder", "etsy", "44.00", ("Linen", "Leather")),
        _Product("Cooking class for two", "", "150.00"),
    ),
    "coffee": (
        _Product("Fellow Stagg EKG Electric Pour-Over Kettle", "amazon", "165.00",
                 ("Matte Black", "Polished Copper", "Matte White")),
        _Product("Baratza Encore Conical Burr Grinder", "amazon", "149.95"),
        _Product("AeroPress Coffee Maker", "amazon", "39.95", ("Original", "Go", "Clear")),
        _Product("Ember Mug 2, 10 oz", "amazon", "129.95", ("Black", "White", "Sage")),
        _Product("Handmade Ceramic Pour-Over Mug", "etsy", "42.00",
                 ("Speckled White", "Ocean Glaze", "Charcoal")),
        _Product("Single-Origin Coffee Sampler", "etsy", "34.00", ("Whole Bean", "Ground")),
    ),
    "gardening": (
        _Product("Garden Tool Set with Canvas Tote", "target", "39.99"),
        _Product("Felco F-2 Classic Pruning Shears", "amazon", "64.95"),
        _Product("Heirloom Vegetable Seed Collection", "etsy", "24.00",
                 ("25 Varieties", "50 Varieties")),
        _Product("Self-Watering Herb Garden", "uncommongoods", "45.00",
                 ("Basil Trio", "Tea Herbs")),
        _Product("LEGO Botanicals Orchid", "lego", "49.99"),
        _Product("LEGO Botanicals Bonsai Tree", "lego", "49.99"),
        _Product("Personalized Copper Garden Marker", "etsy", "18.50"),
        _Product("Ceramic Hanging Planter", "target", "24.99", ("White", "Terracotta", "Sage")),
    ),
    "board games": (
        _Product("Wingspan Board Game", "target", "64.99", ("Base Game", "Oceania Expansion")),
        _Product("Ticket to Ride", "target", "54.99", ("USA", "Europe")),
        _Product("Codenames", "target", "19.99", ("Original", "Pictures", "Duet")),
        _Product("Exploding Kittens", "target", "19.99", ("Original", "Party Pack")),
        _Product("Azul", "amazon", "39.99", ("Original", "Summer Pavilion")),
        _Product("Cascadia", "amazon", "39.99", ("Base Game", "Landmarks")),
        _Product("Catan", "target", "49.99", ("Base Game", "Seafarers Expansion")),
    ),
    "photography": (
        _Product("Fujifilm Instax Mini 12 Instant Camera", "bestbuy", "79.95",
                 ("Clay White", "Blossom Pink", "Pastel Blue")),
        _Product("Instax Mini Film", "amazon", "44.99", ("50 Shots", "Rainbow Frame, 20 Shots")),
        _Product("Peak Design Slide Lite Camera Strap", "amazon", "59.95", ("Black", "Ash")),
        _Product("Custom Leather Camera Strap", "etsy", "48.00", ("Brown", "Black")),
        _Product("Manfrotto PIXI Mini Tripod", "amazon", "29.88"),
        _Product("Personalized Photo Album", "etsy", "52.00", ("Linen", "Leather")),
        _Product("Homemade family photo calendar", "", None),
    ),
    "music": (
        _Product("Audio-Technica AT-LP60X Turntable", "bestbuy", "149.00", ("Black", "Gunmetal")),
        _Product("Sony WH-1000XM5 Wireless Headphones", "bestbuy", "399.99",
                 ("Black", "Silver", "Midnight Blue")),
        _Product("Walnut Vinyl Record Storage Crate", "etsy", "65.00", ("Walnut", "White Oak")),
        _Product("Kala Concert Ukulele", "amazon", "89.99", ("Mahogany", "Spruce Top")),
        _Product("Vinyl Record Cleaning Kit", "amazon", "24.99"),
        _Product("JBL Flip 6 Bluetooth Speaker", "target", "129.99",
                 ("Blue", "Black", "Red", "Teal")),
        _Product("Concert tickets (two seats)", "", "180.00"),
    ),
    "yoga": (
        _Product("Manduka PRO Yoga Mat 6mm", "rei", "129.00", ("Black Magic", "Verve", "Indulge")),
        _Product("Cork Yoga Block Set", "amazon", "24.99", ("Set of 2", "With Strap")),
        _Product("Weighted Blanket, 15 lb", "target", "59.99", ("Gray", "Blush")),
        _Product("Buckwheat Meditation Cushion", "etsy", "55.00", ("Indigo", "Sage", "Charcoal")),
        _Product("Ultrasonic Essential Oil Diffuser", "target", "34.99",
                 ("Light Wood Grain", "Dark Wood Grain")),
    ),
    "running": (
        _Product("Garmin Forerunner 265 GPS Running Watch", "bestbuy", "449.99",
                 ("Black", "Whitestone", "Aqua")),
        _Product("Brooks Ghost 16 Running Shoes", "rei", "140.00",
                 ("Men's 9", "Men's 10", "Women's 8")),
        _Product("Nathan QuickSqueeze Handheld Bottle", "rei", "30.00", ("12 oz", "18 oz")),
        _Product("Theragun Mini Massager", "target", "199.00", ("Black", "Desert Rose")),
        _Product("Running Medal Display Hanger", "etsy", "36.00", ("Black", "Brushed Silver")),
    ),
    "baking": (
        _Product("KitchenAid Artisan 5-qt Stand Mixer", "target", "449.99",
                 ("Empire Red", "Pistachio", "Matte Black")),
        _Product("Nordic Ware Bundt Pan", "amazon", "36.00", ("Heritage", "Jubilee")),
        _Product("Sourdough Starter Kit", "etsy", "32.00", ("Starter Only", "With Banneton")),
        _Product("OXO Good Grips Baking Essentials Set", "target", "39.99"),
        _Product("The Perfect Loaf by Maurizio Leo", "bookshop", "37.50"),
    ),
    "camping": (
        _Product("REI Co-op Trail Hut 2 Tent", "rei", "199.00"),
        _Product("BioLite CampStove 2+", "rei", "149.95"),
        _Product("Helinox Chair One", "rei", "109.95", ("Black", "Coyote Tan")),
        _Product("Stanley Classic Legendary Camp Mug", "amazon", "25.00",
                 ("Hammertone Green", "Polar")),
        _Product("Custom Campfire Enamel Mug", "etsy", "26.00", ("White", "Forest Green")),
    ),
    "puzzles": (
        _Product("Ravensburger 1000-Piece Puzzle", "amazon", "19.99",
                 ("Cozy Bookshop", "Alpine Village", "Vintage World Map")),
        _Product("Wooden Jigsaw Puzzle, 500 Pieces", "etsy", "68.00", ("Hummingbird", "Fox")),
        _Product("Puzzle Roll-Up Mat", "amazon", "22.99"),
        _Product("New York Times Crossword Collection", "bookshop", "14.99",
                 ("Easy Mondays", "Sunday Best")),
        _Product("Puzzle Board with Drawers", "amazon", "59.99", ("Walnut", "Natural")),
    ),
    "tea": (
        _Product("Cast Iron Japanese Teapot", "amazon", "38.99", ("Black", "Blue")),
        _Product("Loose Leaf Tea Sampler", "etsy", "28.00", ("12 Blends", "24 Blends")),
        _Product("Electric Gooseneck Tea Kettle", "target", "49.99", ("Matte Black", "Stainless")),
        _Product("Personalized Tea Infuser", "etsy", "19.00", ("Gold", "Silver")),
        _Product("Matcha Whisk Set", "etsy", "36.00", ("With Ceramic Bowl", "Whisk Only")),
    ),
    "woodworking": (
        _Product("Narex Bench Chisel Set, 4 Pieces", "amazon", "54.00"),
        _Product("Whittling Knife Starter Kit", "amazon", "29.99"),
        _Product("Personalized Leather Shop Apron", "etsy", "58.00", ("Brown", "Black")),
        _Product("Kreg Pocket-Hole Jig 320", "amazon", "39.99"),
    ),
    "knitting": (
        _Product("Merino Wool Yarn Bundle", "etsy", "45.00",
                 ("Autumn Palette", "Ocean Palette", "Meadow Palette")),
        _Product("ChiaoGoo Interchangeable Needle Set", "amazon", "125.00"),
        _Product("Knitting Project Bag", "etsy", "34.00", ("Floral", "Linen")),
        _Product("Cozy Sweaters: A Knitting Pattern Book", "bookshop", "24.99"),
    ),
    "birdwatching": (
        _Product("Nikon Prostaff P3 8x42 Binoculars", "amazon", "146.95"),
        _Product("The Sibley Field Guide to Birds", "bookshop", "24.95", ("Eastern", "Western")),
        _Product("Handmade Cedar Bird Feeder", "etsy", "42.00", ("Small", "Large")),
        _Product("Window Bird Feeder", "target", "24.99"),
    ),
    "travel": (
        _Product("Packing Cubes, Set of 6", "amazon", "26.99", ("Navy", "Gray", "Sage")),
        _Product("Scratch-Off World Map", "uncommongoods", "38.00"),
        _Product("Personalized Leather Passport Holder", "etsy", "29.00", ("Brown", "Navy")),
        _Product("Apple AirTag", "bestbuy", "99.00", ("1 Pack", "4 Pack")),
        _Product("Osprey Daylite Travel Pack", "rei", "90.00", ("Black", "Blue Night")),
        _Product("Memory Foam Travel Pillow", "target", "29.99", ("Gray", "Navy")),
        _Product("Hot air balloon ride voucher", "", "249.00"),
    ),
    "golf": (
        _Product("Titleist Golf Balls, Dozen", "amazon", "54.99", ("Pro V1", "Pro V1x")),
        _Product("Personalized Golf Ball Marker", "etsy", "22.00", ("Brass", "Silver")),
        _Product("Golf lesson package", "", "150.00"),
        _Product("Indoor Putting Green Mat", "amazon", "59.99"),
    ),
    "tech": (
        _Product("Apple AirPods Pro (2nd generation)", "bestbuy", "249.00"),
        _Product("Anker MagGo Power Bank", "amazon", "69.99", ("Black", "White")),
        _Product("Logitech MX Master 3S Mouse", "bestbuy", "99.99", ("Graphite", "Pale Gray")),
        _Product("Philips Hue Starter Kit", "bestbuy", "179.99",
                 ("White and Color", "White Ambiance")),
        _Product("Anker Nano Charger, 30W", "amazon", "22.99", ("White", "Black")),
        _Product("Raspberry Pi 5 Starter Kit", "amazon", "119.99"),
        _Product("Aura Carver Digital Photo Frame", "amazon", "149.00", ("Chalk", "Charcoal")),
    ),
    "wine": (
        _Product("Riedel Wine Glasses, Set of 4", "williams-sonoma", "79.95",
                 ("Cabernet", "Chardonnay")),
        _Product("Rabbit Electric Wine Opener", "target", "39.99", ("Black", "Silver")),
        _Product("Personalized Wooden Wine Box", "etsy", "48.00", ("Single Bottle", "Two Bottles")),
    ),
    "painting": (
        _Product("Winsor & Newton Cotman Watercolor Set", "amazon", "32.99",
                 ("12 Half Pans", "24 Half Pans")),
        _Product("Beechwood Tabletop Easel", "amazon", "39.99"),
        _Product("Custom Pet Portrait in Watercolor", "etsy", "85.00", ("One Pet", "Two Pets")),
        _Product("Arteza Acrylic Paint Set, 24 Colors", "amazon", "29.99"),
        _Product("Pottery wheel class", "", "95.00"),
    ),
    "cycling": (
        _Product("Kryptonite Evolution Mini-7 U-Lock", "rei", "89.95"),
        _Product("Garmin Varia Rear Radar", "rei", "199.99", ("RTL515", "RCT715")),
        _Product("Crankbrothers M19 Multi-Tool", "rei", "39.95"),
    ),
    "skincare": (
        _Product("Laneige Lip Sleeping Mask", "target", "24.00", ("Berry", "Vanilla")),
        _Product("Handmade Soap Gift Box", "etsy", "32.00", ("Lavender", "Citrus", "Oatmeal")),
        _Product("Mulberry Silk Pillowcase", "amazon", "39.99", ("Champagne", "Navy", "Blush")),
        _Product("Spa day gift certificate", "", "120.00"),
    ),
    "lego": (
        _Product("LEGO Classic Large Creative Brick Box", "lego", "59.99"),
        _Product("LEGO Creator 3in1 Space Shuttle", "lego", "34.99"),
        _Product("LEGO City Fire Station", "lego", "79.99"),
        _Product("LEGO Technic Race Car", "lego", "44.99"),
        _Product("LEGO Minecraft The Crafting Box", "lego", "99.99"),
        _Product("LEGO Friends Horse Stable", "lego", "39.99"),
    ),
    "dinosaurs": (
        _Product("National Geographic Mega Fossil Dig Kit", "amazon", "24.99"),
        _Product("Dinosaur Encyclopedia for Kids", "bookshop", "19.99"),
        _Product("Jurassic World Roaring T. Rex Figure", "target", "29.99"),
        _Product("Personalized Dinosaur Backpack", "etsy", "38.00", ("Green", "Blue")),
    ),
    "science": (
        _Product("Snap Circuits Jr. Electronics Kit", "amazon", "36.99"),
        _Product("Crystal Growing Kit", "target", "19.99", ("Classic", "Glow-in-the-Dark")),
        _Product("Kids' 70mm Refractor Telescope", "amazon", "69.99"),
        _Product("Magna-Tiles Clear Colors, 32 Pieces", "target", "49.99"),
    ),
    "soccer": (
        _Product("Adidas Kids' Soccer Ball", "target", "24.99", ("Size 3", "Size 4")),
        _Product("Pop-Up Soccer Goal Set", "amazon", "39.99", ("4 ft", "6 ft")),
        _Product("Kids' Shin Guards", "target", "14.99", ("Small", "Medium")),
    ),
    "art": (
        _Product("Crayola Inspiration Art Case", "target", "24.99"),
        _Product("Melissa & Doug Deluxe Standing Easel", "amazon", "79.99"),
        _Product("Personalized Kids' Art Portfolio", "etsy", "29.00", ("Rainbow", "Space")),
        _Product("Kids' Pottery Painting Kit", "target", "21.99"),
    ),
    "video games": (
        _Product("Nintendo Switch OLED", "bestbuy", "349.99", ("White", "Neon Red/Blue")),
        _Product("Mario Kart 8 Deluxe", "bestbuy", "59.99"),
        _Product("Minecraft for Nintendo Switch", "target", "29.99"),
        _Product("Nintendo Switch Pro Controller", "bestbuy", "69.99"),
        _Product("Super Mario Bros. Wonder", "bestbuy", "59.99"),
        _Product("Animal Crossing: New Horizons", "target", "59.99"),
    ),
    "chapter books": (
        _Product("Wings of Fire Box Set by Tui T. Sutherland", "bookshop", "39.95"),
        _Product("Dog Man: The Scarlet Shedder by Dav Pilkey", "bookshop", "12.99"),
        _Product("The Wild Robot by Peter Brown", "bookshop", "9.99", ("Paperback", "Hardcover")),
        _Product("Personalized Storybook", "etsy", "34.00", ("Space Adventure", "Under the Sea")),
        _Product("Magic Tree House Boxed Set, Books 1-4", "bookshop", "23.96"),
    ),
}
KID_TAGS = ("lego", "dinosaurs", "science", "soccer", "art", "video games", "chapter books")
ADULT_TAGS = tuple(t for t in CATALOG if t not in KID_TAGS)
SENIOR_TAGS = tuple(t for t in ADULT_TAGS if t not in ("running", "cycling", "camping", "tech"))
HOST_TAGS = ("cooking", "wine", "tea", "baking", "gardening", "coffee")
GIFT_DESCRIPTIONS = (
    "Free shipping on orders over $35.",
    "Ships in 3-5 business days.",
    "Highly rated; reviews say it runs a little small.",
    "Usually on sale around Black Friday.",
    "Gift wrap available at checkout.",
    "Comes in a nice gift box, no wrapping needed.",
)
HANDMADE_DESCRIPTIONS = ("Made to order - allow about two weeks.",
                         "Small shop; message the seller about personalization.")


# ---------------------------------------------------------------- lists and comments


ITEM_NOTES = (
    "Check if they already have this.", "Wait for a sale.", "Ask for a gift receipt.",
    "Wrap in the blue paper.", "Splitting this one with Sam.", "Ship straight to Grandma's.",
    "Backordered until next month.", "Confirm the color first.", "Engrave initials only.",
    "Pair with a handwritten card.", "Return window is 30 days.", "Hide in the hall closet.",
)
LIST_COMMENTS = (
    "Added a few more ideas to {list} from the group chat.",
    "Can we keep this one under budget? Last year got out of hand.",
    "I think we've covered the big stuff here - anything left should be small.",
    "Let's split the biggest item three ways.",
    "Shipping gets slow near the holidays, so let's lock this in soon.",
    "Moved the duplicates off this list.",
    "Love these ideas. I'll take the first two.",
    "Plan: one main gift that we all chip in on, plus a couple of small things "
    "each. I checked prices this morning and most of the bigger items are within a few "
    "dollars of last month. If nobody objects I'll order the main gift this weekend so it "
    "arrives in time, and I'll keep the receipt in case we change our minds. Small things "
    "are up to each of you - just mark them SELECTED here so we don't double up.",
)
ITEM_COMMENTS = (
    "I'll grab this one - {store} has it on sale right now.",
    "Already ordered! Should arrive by Thursday.",
    "Does anyone know {person}'s size?",
    "Wrapped and hidden in the hall closet.",
    "Are we sure {person} doesn't already have {gift}?",
    "Picked this up today.",
    "Maybe pair this with a card from the kids.",
    "Holding off until the price drops a bit.",
)
GIFT_COMMENTS = (
    "{gift} has great reviews - 4.8 stars with thousands of ratings.",
    "Price dropped about ten dollars last week.",
    "Saw this in person; it's smaller than it looks in the photos.",
    "{store} ships this free if we bundle it with something else.",
    "Heads up: this one sells out every year around the holidays.",
)
PERSON_COMMENTS = (
    "{person} mentioned wanting to get back into {interest}.",
    "Reminder: {person} really doesn't want more clutter this year.",
    "{person} loved last year's gift - something in the same spirit would be great.",
    "Talked to {person} on the phone; sounds like {interest} is the big thing lately.",
    "Let's do one nice thing for {person} rather than lots of little ones.",
)
OCCASION_COMMENTS = (
    "Should we do a group gift for {occasion}?",
    "Who's hosting {occasion} this year?",
    "Budget for {occasion} feels about right to me.",
    "I'll handle cards and wrapping for {occasion}.",
    "Let's have everything bought a week before {occasion}.",
)


@dataclass
class _ListPlan:
    name: str
    kind: m.ListKind
    person: m.Person | None = None
    occasion: m.Occasion | None = None
    tags: tuple[str, ...] = ()  # gift tags to prefer when there is no person
    max_price: Decimal | None = None


@dataclass
class _Change:
    at: datetime
    kind: m.EventKind
    row: m.ListItem | m.Comment
    actor_id: uuid.UUID | None
    overrides: dict[str, Any]


# ---------------------------------------------------------------- helpers


def _ago(rng: random.Random, now: datetime, lo_days: float, hi_days: float) -> datetime:
    """A random instant between `hi_days` and `lo_days` before `now`."""
    return now - timedelta(seconds=rng.uniform(lo_days * DAY, hi_days * DAY))


def _between(rng: random.Random, start: datetime, end: datetime) -> datetime:
    """A random instant in [start, end] (start itself if the range is empty)."""
    span = (end - start).total_seconds()
    return start + timedelta(seconds=rng.uniform(0, span)) if span > 0 else start


def _money(value: str | int | Decimal) -> Decimal:
    """`value` as a Decimal with exactly two places."""
    return Decimal(value).quantize(CENT)


def _slug(text_: str) -> str:
    """A URL slug: ASCII, lowercase, words joined by hyphens."""
    ascii_ = unicodedata.normalize("NFKD", text_).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "-", ascii_.lower()).strip("-")


def _digits(rng: random.Random, n: int) -> str:
    """`n` random decimal digits."""
    return "".join(rng.choice("0123456789") for _ in range(n))


def _url(rng: random.Random, store: str, slug: str) -> str | None:
    """A realistic product URL at `store` (None for gifts that are not bought online)."""
    if store == "amazon":
        asin = "".join(rng.choice("ABCDEFGHJKLMNPQRSTUVWXYZ0123456789") for _ in range(8))
        return f"https://www.amazon.com/dp/B0{asin}"
    if store == "etsy":
        return f"https://www.etsy.com/listing/{rng.randint(1_000_000_000, 1_799_999_999)}/{slug}"
    if store == "target":
        return f"https://www.target.com/p/{slug}/-/A-{_digits(rng, 8)}"
    if store == "rei":
        return f"https://www.rei.com/product/{rng.randint(100_000, 249_999)}/{slug}"
    if store == "bookshop":
        return f"https://bookshop.org/p/books/{slug}/{_digits(rng, 8)}?ean=978{_digits(rng, 10)}"
    if store == "uncommongoods":
        return f"https://www.uncommongoods.com/product/{slug}"
    if store == "lego":
        return f"https://www.lego.com/en-us/product/{slug}-{rng.randint(10_000, 79_999)}"
    if store == "bestbuy":
        return f"https://www.bestbuy.com/site/{slug}/{_digits(rng, 7)}.p"
    if store == "williams-sonoma":
        return f"https://www.williams-sonoma.com/products/{slug}/"
    return None


def _ordinal(n: int) -> str:
    """1 -> '1st', 12 -> '12th', 22 -> '22nd'."""
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _called(person: m.Person) -> str:
    """How the family refers to a person: 'Mom' for parents, the first name otherwise."""
    if person.relationship in CALLED_BY_ROLE:
        return person.relationship or person.name
    return person.name.split()[0]


def _possessive(name: str) -> str:
    """'Mom' -> "Mom's"."""
    return f"{name}'" if name.endswith("s") else f"{name}'s"


def _nth_weekday(year: int, month: int, weekday: int, n: int) -> date:
    """The n-th `weekday` (Monday is 0) of a month."""
    first = date(year, month, 1)
    return first + timedelta(days=(weekday - first.weekday()) % 7 + 7 * (n - 1))


def _holidays(start: date, end: date) -> list[tuple[str, date]]:
    """The family's gift-giving holidays between two dates, soonest first."""
    found: list[tuple[str, date]] = []
    for year in range(start.year, end.year + 1):
        for name, day in (
            ("Mother's Day", _nth_weekday(year, 5, 6, 2)),
            ("Father's Day", _nth_weekday(year, 6, 6, 3)),
            ("Thanksgiving", _nth_weekday(year, 11, 3, 4)),
            ("Christmas", date(year, 12, 25)),
        ):
            if start <= day <= end:
                found.append((f"{name} {year}", day))
    return sorted(found, key=lambda h: h[1])


def _progress(show: bool) -> Progress:
    """A progress display with one bar per phase; renders nothing when `show` is false."""
    return Progress(
        TextColumn("{task.description:<10}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        disable=not show,
    )


async def _insert(
    session: AsyncSession, progress: Progress, task: TaskID, rows: Sequence[m.Base]
) -> None:
    """Add rows in chunks, flushing each chunk and advancing the phase's bar."""
    progress.update(task, total=len(rows))
    for start in range(0, len(rows), CHUNK):
        chunk = rows[start:start + CHUNK]
        session.add_all(chunk)
        await session.flush()
        progress.advance(task, len(chunk))


async def _existing_login(sessions: async_sessionmaker[AsyncSession]) -> DemoLogin | None:
    """The demo login if a user with the demo email already exists (any letter case)."""
    async with sessions() as session:
        email = await session.scalar(
            select(m.User.email).where(func.lower(m.User.email) == DEMO_EMAIL.lower())
        )
    return None if email is None else DemoLogin(email=email, password=DEMO_PASSWORD)


# ---------------------------------------------------------------- phases


async def _users(
    session: AsyncSession, family: m.Family, password_hash: str, surname: str, at: datetime
) -> list[m.User]:
    """The demo admin plus members, each under an email no other user has."""
    wanted = [f"{local}@{EMAIL_DOMAIN}" for local, _, _ in USERS]
    taken = set(
        (await session.scalars(
            select(func.lower(m.User.email)).where(
                func.lower(m.User.email).like(f"%@{EMAIL_DOMAIN}")
            )
        )).all()
    )
    users: list[m.User] = []
    for (local, first, role), email in zip(USERS, wanted, strict=True):
        n = 2
        while email != DEMO_EMAIL and email in taken:
            email = f"{local}{n}@{EMAIL_DOMAIN}"
            n += 1
        taken.add(email)
        users.append(m.User(
            id=uuid.uuid4(),
            family_id=family.id, email=email, display_name=f"{first} {surname}", role=role,
            is_active=True, password_hash=password_hash, created_at=at, updated_at=at,
        ))
    return users


def _persons(
    rng: random.Random, family_id: uuid.UUID, surnames: dict[str, str], today: date, now: datetime
) -> list[m.Person]:
    """Twelve relatives and friends with birthdays, interests and notes."""
    used: set[str] = set()
    persons: list[m.Person] = []
    for rel in RELATIVES:
        age = rng.randint(*rel.ages)
        if rel.surname == "friend":
            first, last = rng.choice([f for f in FRIENDS[rel.gender] if f[0] not in used])
        else:
            generation = ("kid" if age < 18 else "young" if age < 45
                          else "middle" if age < 75 else "old")
            first = rng.choice([n for n in FIRST_NAMES[rel.gender, generation] if n not in used])
            last = surnames[rel.surname]
        used.add(first)
        birthday = date(today.year - age - 1, rng.randint(1, 12), rng.randint(1, 28))
        tags = KID_TAGS if age < 18 else SENIOR_TAGS if age >= 75 else ADULT_TAGS
        created = _ago(rng, now, 100, 120)
        persons.append(m.Person(
            id=uuid.uuid4(),
            family_id=family_id, name=f"{first} {last}", relationship=rel.relationship,
            birthday=birthday, interests=rng.sample(tags, rng.randint(3, 5)),
            notes=rng.choice(PERSON_NOTES[rel.relationship]) if rng.random() < 0.85 else None,
            created_at=created, updated_at=created,
        ))
    return persons


def _occasion(
    family_id: uuid.UUID, name: str, kind: m.OccasionKind, day: date, budget: Decimal | None,
    description: str | None, created: datetime,
) -> m.Occasion:
    """One Occasion row."""
    return m.Occasion(id=uuid.uuid4(), family_id=family_id, name=name, kind=kind, date=day,
                      budget=budget, description=description, created_at=created,
                      updated_at=created)


def _occasions(
    rng: random.Random, family_id: uuid.UUID, persons: list[m.Person], today: date, now: datetime
) -> tuple[list[m.Occasion], list[_ListPlan]]:
    """About eight occasions from two months ago to ten months ahead, with their gift plans.

    The birthday occasions move their person's birthday onto the occasion's date.
    """
    by_role = {p.relationship: p for p in persons}
    occasions: list[m.Occasion] = []
    plans: list[_ListPlan] = []

    def created() -> datetime:
        """When the family added an occasion: three to four months ago."""
        return _ago(rng, now, 90, 110)

    # Days from today, spread over the window; holidays fall where the calendar puts them.
    slots = [base + rng.randint(-10, 10) for base in (-50, -20, 20, 80, 170, 280)]
    # Birthdays: one recently past, one coming up soon, one later in the year.
    birthday_slots = (slots[1], slots[2], slots[4])
    other_slots = rng.sample((slots[0], slots[3], slots[5]), 3)
    for person, offset in zip(rng.sample(persons, 3), birthday_slots, strict=True):
        day = today + timedelta(days=offset)
        if (day.month, day.day) == (2, 29):
            day += timedelta(days=1)
        born = person.birthday.year if person.birthday else today.year - 40
        age = day.year - born
        person.birthday = date(born, day.month, day.day)
        called = _called(person)
        milestone = person.relationship in KIDS or age % 10 == 0
        name = f"{_possessive(called)} {_ordinal(age)} birthday" if milestone else (
            f"{_possessive(called)} birthday")
        occasion = _occasion(family_id, name, m.OccasionKind.BIRTHDAY, day, BUDGET_TBD,
                             rng.choice(("Dinner at their favorite place, gifts after.",
                                         "Small party at home.", None)), created())
        occasions.append(occasion)
        plans.append(_ListPlan(f"{_possessive(called)} birthday {day.year}",
                               m.ListKind.GIFT_PLAN, person, occasion))

    # Anniversary of Mom and Dad.
    day = today + timedelta(days=other_slots.pop())
    mom_born = by_role["Mom"].birthday
    married = (mom_born.year if mom_born else today.year - 60) + 25
    occasion = _occasion(family_id, f"Mom & Dad's {_ordinal(day.year - married)} anniversary",
                         m.OccasionKind.ANNIVERSARY, day, BUDGET_TBD,
                         "Surprise dinner - the kids are chipping in together.", created())
    occasions.append(occasion)
    plans.append(_ListPlan("Anniversary gift for Mom & Dad", m.ListKind.GIFT_PLAN,
                           by_role["Mom"], occasion))

    # Holidays: Christmas if it falls in the window, plus one more.
    window = _holidays(today - timedelta(days=60), today + timedelta(days=300))
    christmas = [h for h in window if h[0].startswith("Christmas")]
    others = [h for h in window if not h[0].startswith("Christmas")]
    picked = christmas[:1] + rng.sample(others, min(len(others), 2 - len(christmas[:1])))
    for name, day in sorted(picked, key=lambda h: h[1]):
        big = name.startswith("Christmas")
        occasion = _occasion(family_id, name, m.OccasionKind.HOLIDAY, day, BUDGET_TBD,
                             "Everyone at Grandma and Grandpa's this year." if big else None,
                             created())
        occasions.append(occasion)
        if big:
            for person in rng.sample(persons, 6):
                plans.append(_ListPlan(f"{name} - {_called(person)}", m.ListKind.GIFT_PLAN,
                                       person, occasion))
            plans.append(_ListPlan("Stocking stuffers", m.ListKind.IDEAS, None, occasion,
                                   max_price=_money(30)))
        elif name.startswith("Mother's"):
            for role in ("Mom", "Grandma"):
                plans.append(_ListPlan(f"{name} - {role}", m.ListKind.GIFT_PLAN,
                                       by_role[role], occasion))
        elif name.startswith("Father's"):
            for role in ("Dad", "Grandpa"):
                plans.append(_ListPlan(f"{name} - {role}", m.ListKind.GIFT_PLAN,
                                       by_role[role], occasion))
        else:
            plans.append(_ListPlan(f"{name} host gifts", m.ListKind.IDEAS, None, occasion,
                                   tags=HOST_TAGS))

    # Everything else, to make eight.
    cousin, friend, sister = by_role["Cousin"], by_role["Best friend"], by_role["Sister"]
    extras: list[tuple[str, m.Person | None, str]] = [
        (f"{_possessive(_called(cousin))} graduation", cousin, "Ceremony at 10am, lunch after."),
        (f"{_possessive(_called(friend))} housewarming", friend, "Bring a plant or a bottle."),
        ("Office Secret Santa", None, "$30 limit, exchange at the team lunch."),
        (f"{_possessive(_called(sister))} baby shower", sister, "Registry link is in the invite."),
    ]
    for name, who, description in rng.sample(extras, max(0, 8 - len(occasions))):
        offset = other_slots.pop() if other_slots else rng.randint(-60, 300)
        day = today + timedelta(days=offset)
        budget = BUDGET_TBD if who is not None and rng.random() < 0.7 else None
        occasion = _occasion(family_id, name, m.OccasionKind.OTHER, day, budget,
                             description, created())
        occasions.append(occasion)
        if who is None:
            plans.append(_ListPlan("Secret Santa ideas (under $30)", m.ListKind.IDEAS, None,
                                   occasion, max_price=_money(30)))
        else:
            plans.append(_ListPlan(f"{name} gift", m.ListKind.GIFT_PLAN, who, occasion))
    return occasions, plans


def _list_plans(
    rng: random.Random, persons: list[m.Person], occasion_plans: list[_ListPlan]
) -> list[_ListPlan]:
    """Thirty lists: the occasions' gift plans, host gifts, then wishlists and idea lists."""
    plans = list(occasion_plans)
    plans.append(_ListPlan("Host gifts to keep on hand", m.ListKind.IDEAS, tags=HOST_TAGS))
    shuffled = rng.sample(persons, len(persons))
    plans += [_ListPlan(f"{_possessive(_called(p))} wishlist", m.ListKind.WISHLIST, p)
              for p in shuffled]
    plans += [_ListPlan(f"Gift ideas for {_called(p)}", m.ListKind.IDEAS, p) for p in shuffled]
    return plans[:N_LISTS]


def _gift_lists(
    rng: random.Random, family_id: uuid.UUID, plans: list[_ListPlan], users: list[m.User],
    now: datetime,
) -> list[m.GiftList]:
    """One GiftList per plan, owners spread across users, budgets mostly on gift plans."""
    budget_odds = {m.ListKind.GIFT_PLAN: 0.8, m.ListKind.IDEAS: 0.2, m.ListKind.WISHLIST: 0.1}
    rows: list[m.GiftList] = []
    for plan in plans:
        created = _ago(rng, now, 20, 85)
        budget = BUDGET_TBD if rng.random() < budget_odds[plan.kind] else None
        rows.append(m.GiftList(
            id=uuid.uuid4(),
            family_id=family_id, name=plan.name, kind=plan.kind,
            person_id=plan.person.id if plan.person else None,
            occasion_id=plan.occasion.id if plan.occasion else None,
            owner_id=rng.choices(users, weights=[5, 3, 2][: len(users)])[0].id,
            budget=budget, created_at=created, updated_at=created,
        ))
    return rows


def _gifts(
    rng: random.Random, family_id: uuid.UUID, now: datetime
) -> tuple[list[m.Gift], dict[str, list[m.Gift]]]:
    """About 300 gifts from the catalog (every product once, then more variants)."""
    combos = [(tag, product, variant) for tag, products in CATALOG.items()
              for product in products for variant in (product.variants or ("",))]
    rng.shuffle(combos)
    first_seen: set[str] = set()
    firsts: list[tuple[str, _Product, str]] = []
    rest: list[tuple[str, _Product, str]] = []
    for combo in combos:
        (firsts if combo[1].name not in first_seen else rest).append(combo)
        first_seen.add(combo[1].name)
    gifts: list[m.Gift] = []
    by_tag: dict[str, list[m.Gift]] = {tag: [] for tag in CATALOG}
    for tag, product, variant in (firsts + rest)[:N_GIFTS]:
        name = f"{product.name} ({variant})" if variant else product.name
        url = _url(rng, product.store, _slug(name))
        price = None if product.price is None else _money(product.price)
        if price is not None and rng.random() < 0.15:
            price = _money(price * Decimal("0.85"))  # caught on sale
        handmade = product.store == "etsy"
        description = (rng.choice(HANDMADE_DESCRIPTIONS if handmade else GIFT_DESCRIPTIONS)
                       if url and rng.random() < 0.4 else None)
        created = _ago(rng, now, 8, 100)
        gift = m.Gift(
            id=uuid.uuid4(),
            family_id=family_id, name=name, url=url, store=store_from_url(url), price=price,
            currency="USD", image_url=None, description=description,
            created_at=created, updated_at=created,
        )
        gifts.append(gift)
        by_tag[tag].append(gift)
    return gifts, by_tag


def _status_weights(plan: _ListPlan, today: date) -> tuple[int, int, int, int]:
    """How likely IDEA/SELECTED/PURCHASED/RECEIVED are, given how close the occasion is."""
    if plan.kind == m.ListKind.IDEAS:
        past = plan.occasion is not None and plan.occasion.date < today
        return (60, 20, 15, 5) if past else (75, 20, 5, 0)
    if plan.occasion is not None:
        days = (plan.occasion.date - today).days
        if days < 0:
            return (5, 5, 25, 65)
        if days <= 45:
            return (25, 40, 35, 0)
        return (60, 28, 12, 0)
    return (55, 25, 15, 5)


def _list_sizes(rng: random.Random, n_lists: int) -> list[int]:
    """Item counts per list that add up to N_ITEMS, uneven but never below 8."""
    sizes = [N_ITEMS // n_lists] * n_lists
    for i in range(N_ITEMS - sum(sizes)):
        sizes[i % n_lists] += 1
    for _ in range(n_lists * 3):
        src, dst = rng.randrange(n_lists), rng.randrange(n_lists)
        moved = min(rng.randint(1, 4), sizes[src] - 8)
        if moved > 0:
            sizes[src] -= moved
            sizes[dst] += moved
    return sizes


def _items(
    rng: random.Random, family_id: uuid.UUID, plans: list[_ListPlan], lists: list[m.GiftList],
    gifts: list[m.Gift], by_tag: dict[str, list[m.Gift]], users: list[m.User], today: date,
    now: datetime,
) -> list[m.ListItem]:
    """About 600 items, mostly gifts matching each person's interests."""
    statuses = list(m.ItemStatus)
    items: list[m.ListItem] = []
    for plan, gift_list, size in zip(plans, lists, _list_sizes(rng, len(lists)), strict=True):
        cap = plan.max_price
        affordable = {g for g in gifts if cap is None or (g.price is not None and g.price <= cap)}
        if plan.person is not None:
            kid = plan.person.relationship in KIDS
            prefer_tags = tuple(plan.person.interests)
            fill_tags = KID_TAGS if kid else ADULT_TAGS
        else:
            prefer_tags, fill_tags = plan.tags, ADULT_TAGS
        preferred = [g for t in prefer_tags for g in by_tag.get(t, []) if g in affordable]
        skip = set(preferred)
        fallback = [g for t in fill_tags for g in by_tag.get(t, [])
                    if g in affordable and g not in skip]
        chosen = rng.sample(preferred, min(len(preferred), round(size * 0.7)))
        chosen += rng.sample(fallback, min(len(fallback), size - len(chosen)))
        weights = _status_weights(plan, today)
        for gift in chosen:
            status = rng.choices(statuses, weights=weights)[0]
            assigned = rng.random() < (0.15 if status == m.ItemStatus.IDEA else 0.85)
            created = _between(rng, max(gift_list.created_at, gift.created_at),
                               now - timedelta(days=7))
            items.append(m.ListItem(
                id=uuid.uuid4(),
                family_id=family_id, list_id=gift_list.id, gift_id=gift.id, status=status,
                assignee_id=rng.choice(users).id if assigned else None,
                quantity=rng.choices((1, 2, 3), weights=(80, 14, 6))[0],
                notes=rng.choice(ITEM_NOTES) if rng.random() < 0.25 else None,
                created_at=created,
                updated_at=created if status == m.ItemStatus.IDEA and not assigned
                else _between(rng, created, now - timedelta(days=7)),
            ))
    return items


def _item_history(
    rng: random.Random, items: list[m.ListItem], lists: list[m.GiftList], users: list[m.User],
    now: datetime,
) -> list[_Change]:
    """Move the latest RECENT_ITEMS items into the past week and describe their changes."""
    owner = {gl.id: gl.owner_id for gl in lists}
    recent = rng.sample(items, min(RECENT_ITEMS, len(items)))
    starts = sorted(_ago(rng, now, 0.2, 6) for _ in recent)
    changes: list[_Change] = []
    for item, added in zip(recent, starts, strict=True):
        item.created_at = item.updated_at = added
        later_status = item.status != m.ItemStatus.IDEA
        base = {"status": m.ItemStatus.IDEA.value} if later_status else {}
        actor = owner[item.list_id] if rng.random() < 0.7 else rng.choice(users).id
        changes.append(_Change(added, m.EventKind.ADDED, item, actor,
                               {**base, "assignee_id": None}))
        if item.assignee_id is not None:
            item.updated_at = _between(rng, item.updated_at,
                                       min(item.updated_at + timedelta(hours=20), now))
            changes.append(_Change(item.updated_at, m.EventKind.ASSIGNED, item,
                                   rng.choice((item.assignee_id, actor)), dict(base)))
        if later_status:
            item.updated_at = _between(rng, item.updated_at,
                                       min(item.updated_at + timedelta(hours=15), now))
            changes.append(_Change(item.updated_at, m.EventKind.STATUS_CHANGED, item,
                                   item.assignee_id or actor, {}))
    return changes


def _comments(
    rng: random.Random, family_id: uuid.UUID, plans: list[_ListPlan], lists: list[m.GiftList],
    items: list[m.ListItem], gifts: list[m.Gift], persons: list[m.Person],
    occasions: list[m.Occasion], users: list[m.User], now: datetime,
) -> list[m.Comment]:
    """About 80 comments on lists, items, gifts, persons and occasions."""
    plan_of = {gl.id: plan for plan, gl in zip(plans, lists, strict=True)}
    gift_of = {g.id: g for g in gifts}
    on_lists = list(dict.fromkeys(i.gift_id for i in items))  # ordered: same seed, same data
    personless = [t for t in ITEM_COMMENTS if "{person}" not in t]
    storeless = [t for t in GIFT_COMMENTS if "{store}" not in t]
    targets = rng.choices(list(m.CommentTarget), weights=(20, 25, 12, 13, 10), k=N_COMMENTS)
    comments: list[m.Comment] = []
    for target in targets:
        person: m.Person | None = None
        fields: dict[str, str] = {}
        row: m.GiftList | m.ListItem | m.Gift | m.Person | m.Occasion
        if target == m.CommentTarget.LIST:
            row = rng.choice(lists)
            template = rng.choice(LIST_COMMENTS)
            fields["list"] = row.name
        elif target == m.CommentTarget.LIST_ITEM:
            row = rng.choice(items)
            gift = gift_of[row.gift_id]
            person = plan_of[row.list_id].person
            template = rng.choice(ITEM_COMMENTS if person else personless)
            fields |= {"gift": gift.name, "store": gift.store or "the store"}
        elif target == m.CommentTarget.GIFT:
            row = gift_of[rng.choice(on_lists)]
            template = rng.choice(GIFT_COMMENTS if row.store else storeless)
            fields |= {"gift": row.name, "store": row.store or "the store"}
        elif target == m.CommentTarget.PERSON:
            row = person = rng.choice(persons)
            template = rng.choice(PERSON_COMMENTS)
            fields["interest"] = rng.choice(person.interests)
        else:
            row = rng.choice(occasions)
            template = rng.choice(OCCASION_COMMENTS)
            fields["occasion"] = row.name
        fields["person"] = _called(person) if person else "them"
        created = _between(rng, row.created_at, now - timedelta(days=5))
        comments.append(m.Comment(
            id=uuid.uuid4(),
            family_id=family_id, target=target, target_id=row.id,
            author_id=rng.choice(users).id, body=template.format(**fields)[:2000],
            created_at=created, updated_at=created,
        ))
    return comments


def _comment_history(
    rng: random.Random, comments: list[m.Comment], now: datetime
) -> list[_Change]:
    """Move the latest RECENT_COMMENTS comments into the past few days, as feed entries."""
    recent = rng.sample(comments, min(RECENT_COMMENTS, len(comments)))
    changes: list[_Change] = []
    for comment in recent:
        comment.created_at = comment.updated_at = _ago(rng, now, 0.1, 4)
        changes.append(_Change(comment.created_at, m.EventKind.COMMENT_ADDED, comment,
                               comment.author_id, {}))
    return changes


def _events(family_id: uuid.UUID, changes: list[_Change]) -> list[m.Event]:
    """Feed rows, oldest first so `seq` follows time, each with the row as it was then."""
    events: list[m.Event] = []
    for seq, change in enumerate(sorted(changes, key=lambda c: c.at), 1):  # a new family
        payload = snapshot(change.row) | {"updated_at": change.at.isoformat(),
                                          **change.overrides}
        events.append(m.Event(
            family_id=family_id, seq=seq, topic=FAMILY_TOPIC, kind=change.kind,
            entity_type=ENTITY_TYPES[type(change.row)],
            entity_id=change.row.id,
            actor_id=change.actor_id, at=change.at, payload=payload,
        ))
    return events


def _fit_budgets(
    rng: random.Random, lists: list[m.GiftList], occasions: list[m.Occasion],
    items: list[m.ListItem], gifts: list[m.Gift],
) -> None:
    """Size each budget that is set to what its items cost, so most plans are within budget."""
    price = {g.id: g.price or Decimal(0) for g in gifts}
    spent_by_list: dict[uuid.UUID, Decimal] = {gl.id: Decimal(0) for gl in lists}
    for item in items:
        if item.status in (m.ItemStatus.PURCHASED, m.ItemStatus.RECEIVED):
            spent_by_list[item.list_id] += price[item.gift_id] * item.quantity
    spent_by_occasion: dict[uuid.UUID, Decimal] = {o.id: Decimal(0) for o in occasions}
    for gift_list in lists:
        spent = spent_by_list[gift_list.id]
        if gift_list.occasion_id is not None:
            spent_by_occasion[gift_list.occasion_id] += spent
        if gift_list.budget is not None:
            # Now and then a little over budget, as real plans are.
            gift_list.budget = _round_up(spent * Decimal(rng.uniform(0.95, 1.4)), 25, 50)
    for occasion in occasions:
        if occasion.budget is not None:
            spent = spent_by_occasion[occasion.id]
            occasion.budget = _round_up(spent * Decimal(rng.uniform(1.1, 1.5)), 50, 100)


def _round_up(value: Decimal, step: int, minimum: int) -> Decimal:
    """`value` rounded up to a multiple of `step`, at least `minimum`, with two places."""
    steps = -(-value // step)  # ceiling division
    return _money(max(steps * step, Decimal(minimum)))


async def _seed_family(
    session: AsyncSession, rng: random.Random, password_hash: str, progress: Progress
) -> None:
    """Plan the whole demo family in memory, then insert it phase by phase."""
    tasks = {phase: progress.add_task(phase, total=None) for phase in PHASES}
    now = datetime.now(UTC)
    today = now.date()
    surnames = dict(zip(("family", "grand", "niece"), rng.sample(SURNAMES, 3), strict=True))

    started = now - timedelta(days=120)
    family = m.Family(id=uuid.uuid4(), name=FAMILY_NAME, created_at=started, updated_at=started)
    users = await _users(session, family, password_hash, surnames["family"], started)
    persons = _persons(rng, family.id, surnames, today, now)
    occasions, occasion_plans = _occasions(rng, family.id, persons, today, now)
    plans = _list_plans(rng, persons, occasion_plans)
    lists = _gift_lists(rng, family.id, plans, users, now)
    gifts, by_tag = _gifts(rng, family.id, now)
    items = _items(rng, family.id, plans, lists, gifts, by_tag, users, today, now)
    _fit_budgets(rng, lists, occasions, items, gifts)
    changes = _item_history(rng, items, lists, users, now)
    comments = _comments(rng, family.id, plans, lists, items, gifts, persons, occasions,
                         users, now)
    changes += _comment_history(rng, comments, now)

    session.add(family)
    await session.flush()
    await _insert(session, progress, tasks["users"], users)
    await _insert(session, progress, tasks["persons"], persons)
    await _insert(session, progress, tasks["occasions"], occasions)
    await _insert(session, progress, tasks["lists"], lists)
    await _insert(session, progress, tasks["gifts"], gifts)
    await _insert(session, progress, tasks["items"], items)
    await _insert(session, progress, tasks["comments"], comments)
    # Same lock as events.record(), so `seq` order is commit order for this family.
    await session.execute(
        text("SELECT pg_advisory_xact_lock(hashtextextended(:f, 0))"), {"f": str(family.id)}
    )
    # Snapshots are taken now, after the rows were flushed.
    await _insert(session, progress, tasks["events"], _events(family.id, changes))


async def seed(
    url: str, settings: Settings, *, seed_value: int = 7, show_progress: bool = True
) -> DemoLogin:
    """Insert the demo family (unless its admin already exists) and return its login."""
    db = create_database(url, settings)
    try:
        existing = await _existing_login(db.sessions)
        if existing is not None:
            print(f"Demo user {existing.email} already exists; nothing was added.")
            return existing
        password_hash = await hash_password(settings, DEMO_PASSWORD)
        rng = random.Random(seed_value)  # noqa: S311 - demo data, not security
        try:
            with _progress(show_progress) as progress:
                # One transaction: a failed or interrupted run leaves nothing half-seeded.
                async with db.sessions() as session, session.begin():
                    await _seed_family(session, rng, password_hash, progress)
        except IntegrityError:
            # A concurrent demo-data run committed the demo user first.
            existing = await _existing_login(db.sessions)
            if existing is None:
                raise
            print(f"Demo user {existing.email} was created concurrently; nothing was added.")
            return existing
        return DemoLogin(email=DEMO_EMAIL, password=DEMO_PASSWORD)
    finally:
        await db.dispose()
